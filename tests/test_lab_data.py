"""sntheory.lab.data: file formats round-trip exactly, every bad input is a clear error, the embedded
datasets are deterministic, and the batch sampler resumes bitwise from a plain-dict state."""
from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sntheory.lab import data
from sntheory.lab.data import BatchSampler, ImageDataset, load_array, load_cifar10, load_dataset, \
    load_mnist

needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None,
                                   reason="the embedded datasets need scikit-learn")


def scaled_uint8(x: np.ndarray) -> torch.Tensor:
    """The documented scaling, written independently: float64 x / 127.5 - 1, rounded once."""
    return torch.from_numpy((np.asarray(x, dtype=np.float64) / 127.5 - 1.0).astype(np.float32))


def assert_bytes_round_trip(images: torch.Tensor, raw: np.ndarray) -> None:
    assert torch.equal(images, scaled_uint8(raw))
    back = np.rint((images.numpy().astype(np.float64) + 1.0) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(back, raw)


# ------------------------------------------------------------------------------------ MNIST idx

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def mnist_dir(tmp_path: Path, *, gz: bool, prefix: str = "train", n: int = 5, h: int = 4,
              w: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both ends of the range
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images, 2051), gz)
    write(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels, 2049), gz)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip_from_directory_and_file(tmp_path, gz):
    images, labels = mnist_dir(tmp_path, gz=gz)
    for target in (tmp_path, tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))):
        ds = load_mnist(target)
        assert ds.images.shape == (5, 1, 4, 6) and ds.name == "mnist"
        assert_bytes_round_trip(ds.images[:, 0], images)
        np.testing.assert_array_equal(ds.labels.numpy(), labels)
        assert ds.labels.dtype == torch.int64


def test_mnist_test_split_explicit_labels_and_no_labels(tmp_path):
    train, _ = mnist_dir(tmp_path, gz=False)
    test, test_labels = mnist_dir(tmp_path, gz=True, prefix="t10k", n=3, seed=1)
    ds = load_mnist(tmp_path, split="test")
    assert_bytes_round_trip(ds.images[:, 0], test)
    np.testing.assert_array_equal(ds.labels.numpy(), test_labels)
    # labels from an explicit path: the test labels do not fit the 5 train images
    with pytest.raises(ValueError, match=r"holds 3 labels.*holds 5 images"):
        load_mnist(tmp_path, labels_path=tmp_path / "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    alone = load_mnist(tmp_path / "train-images-idx3-ubyte")
    assert alone.labels is None
    assert_bytes_round_trip(alone.images[:, 0], train)


def test_mnist_errors_name_the_path_value_and_rule(tmp_path):
    images, labels = mnist_dir(tmp_path, gz=False)
    good = idx_bytes(images, 2051)
    missing = tmp_path / "nope" / "train-images-idx3-ubyte"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_mnist(missing)
    cut = write(tmp_path / "cut", good[:-1])
    with pytest.raises(ValueError, match=rf"{cut.name}'.*{len(good) - 1} bytes.*says {len(good)}"):
        load_mnist(cut)
    longer = write(tmp_path / "longer", good + b"\0")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_mnist(longer)
    with pytest.raises(ValueError, match="needs a 16-byte header"):
        load_mnist(write(tmp_path / "short", good[:10]))
    cut_gz = write(tmp_path / "cut.gz", gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        load_mnist(cut_gz)
    with pytest.raises(ValueError, match="says"):
        load_mnist(write(tmp_path / "cut-content.gz", good[:-3], gz=True))
    with pytest.raises(ValueError, match=r"magic number 2049.*need 2051.*labels file"):
        load_mnist(tmp_path / "train-labels-idx1-ubyte")
    bad_magic = write(tmp_path / "bad", (1234).to_bytes(4, "big") + good[4:])
    with pytest.raises(ValueError, match=r"magic number 1234 \(0x000004d2\).*need 2051"):
        load_mnist(bad_magic)
    with pytest.raises(ValueError, match="zero images"):
        load_mnist(write(tmp_path / "empty", idx_bytes(np.zeros((0, 4, 6), np.uint8), 2051)))
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="without MNIST train images"):
        load_mnist(empty_dir)
    with pytest.raises(ValueError, match="`split` must be one of"):
        load_mnist(tmp_path, split="val")


# ------------------------------------------------------------------------------------ CIFAR-10

def cifar_batch(path: Path, images: np.ndarray, labels, protocol: int = 2) -> Path:
    batch = {b"batch_label": b"test", b"labels": list(map(int, labels)),
             b"data": images.reshape(len(images), -1)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return path


def random_cifar(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_single_batch_round_trip(tmp_path, protocol):
    images, labels = random_cifar(4, seed=0)
    ds = load_cifar10(cifar_batch(tmp_path / "data_batch_1", images, labels, protocol))
    assert ds.images.shape == (4, 3, 32, 32) and ds.name == "cifar10"
    assert_bytes_round_trip(ds.images, images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)


def test_cifar_reads_pickles_naming_numpy_core(tmp_path):
    """The published batches were written by numpy 1.x, whose pickles name numpy.core.multiarray."""
    images, labels = random_cifar(2, seed=4)
    path = cifar_batch(tmp_path / "old", images, labels, protocol=2)
    payload = path.read_bytes()
    assert b"numpy._core.multiarray" in payload
    path.write_bytes(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert_bytes_round_trip(load_cifar10(path).images, images)


def test_cifar_rows_are_channel_major(tmp_path):
    row = np.zeros((1, 3072), np.uint8)
    row[0, :1024] = 255  # the first 1024 bytes are the red plane
    row[0, 2048 + 5] = 255  # blue plane, row 0, column 5
    path = tmp_path / "one"
    path.write_bytes(pickle.dumps({b"data": row, b"labels": [7]}))
    ds = load_cifar10(path)
    assert torch.all(ds.images[0, 0] == 1.0)
    assert torch.all(ds.images[0, 1] == -1.0)
    assert ds.images[0, 2, 0, 5] == 1.0 and (ds.images[0, 2] == 1.0).sum() == 1


def test_cifar_directory_of_batches_in_numeric_order(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    parts = {k: random_cifar(3, seed=k) for k in (1, 2)}
    for k in (2, 1):  # written out of order
        cifar_batch(root / f"data_batch_{k}", *parts[k])
    test_images, test_labels = random_cifar(2, seed=9)
    cifar_batch(root / "test_batch", test_images, test_labels)
    for target in (root, tmp_path):  # the directory itself, or its parent
        ds = load_cifar10(target)
        assert_bytes_round_trip(ds.images, np.concatenate([parts[1][0], parts[2][0]]))
        np.testing.assert_array_equal(ds.labels.numpy(), np.concatenate([parts[1][1], parts[2][1]]))
    test = load_cifar10(root, split="test")
    assert_bytes_round_trip(test.images, test_images)


class _Touch:
    """A pickle payload that runs code (creates a file) when loaded by a plain unpickler."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil_batch"
    evil.write_bytes(pickle.dumps({b"data": _Touch(marker), b"labels": [0]}))
    with pytest.raises(ValueError, match=r"refusing to load pathlib.*Path.touch"):
        load_cifar10(evil)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # negative control: a plain unpickler does run it
    assert marker.exists()


def test_cifar_errors(tmp_path):
    images, labels = random_cifar(2, seed=0)
    with pytest.raises(FileNotFoundError, match="missing_batch"):
        load_cifar10(tmp_path / "missing_batch")
    good = pickle.dumps({b"data": images.reshape(2, -1), b"labels": list(labels)})
    cut = tmp_path / "cut"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"'.*cut' is not a readable CIFAR python batch"):
        load_cifar10(cut)
    wide = tmp_path / "wide"
    wide.write_bytes(pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"shape \(N, 3072\).*shape \(2, 3000\)"):
        load_cifar10(wide)
    floats = tmp_path / "floats"
    floats.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072)), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match="must be uint8.*float64"):
        load_cifar10(floats)
    few = tmp_path / "few_labels"
    few.write_bytes(pickle.dumps({b"data": images.reshape(2, -1), b"labels": [3]}))
    with pytest.raises(ValueError, match=r"must be 2 integers.*shape \(1,\)"):
        load_cifar10(few)
    empty = tmp_path / "empty"
    empty.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}))
    with pytest.raises(ValueError, match="zero images"):
        load_cifar10(empty)
    not_dict = tmp_path / "list"
    not_dict.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="must hold a dict.*got list"):
        load_cifar10(not_dict)
    no_data = tmp_path / "no_data"
    no_data.write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(ValueError, match="no b'data' entry"):
        load_cifar10(no_data)
    empty_dir = tmp_path / "dir"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="no CIFAR train batches"):
        load_cifar10(empty_dir)


# ------------------------------------------------------------------------------------ npy / npz

def reference_nchw(n=3, c=3, h=4, w=5, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)
    x.flat[0], x.flat[-1] = 0, 255  # both ends of the range
    return x


@pytest.mark.parametrize("layout,channels", [("NHW", 1), ("NHWC", 1), ("NHWC", 3), ("NCHW", 1),
                                              ("NCHW", 3)])
def test_npy_layouts_round_trip(tmp_path, layout, channels):
    nchw = reference_nchw(c=channels)
    stored = {"NHW": nchw[:, 0], "NHWC": nchw.transpose(0, 2, 3, 1), "NCHW": nchw}[layout]
    path = tmp_path / "x.npy"
    np.save(path, stored)
    ds = load_array(path)
    assert ds.images.shape == nchw.shape and ds.labels is None
    assert_bytes_round_trip(ds.images, nchw)
    assert f"layout {layout}" in ds.scaling


def test_npy_float_and_integer_scaling(tmp_path):
    nchw = reference_nchw()
    unit = nchw / 255.0  # float64 in [0, 1]
    np.save(tmp_path / "unit.npy", unit)
    ds = load_array(tmp_path / "unit.npy")
    assert torch.equal(ds.images, torch.from_numpy((2.0 * unit - 1.0).astype(np.float32)))
    signed = (2.0 * unit - 1.0).astype(np.float32)
    signed[0, 0, 0, 0] = -0.5  # at least one negative value -> read as [-1, 1], kept as is
    np.save(tmp_path / "signed.npy", signed)
    assert torch.equal(load_array(tmp_path / "signed.npy").images, torch.from_numpy(signed))
    np.save(tmp_path / "f255.npy", nchw.astype(np.float32))
    with pytest.raises(ValueError, match=r"values in \[0.0, 255.0\].*pass value_range"):
        load_array(tmp_path / "f255.npy")
    assert_bytes_round_trip(load_array(tmp_path / "f255.npy", value_range=(0, 255)).images, nchw)
    np.save(tmp_path / "int64.npy", nchw.astype(np.int64))
    assert_bytes_round_trip(load_array(tmp_path / "int64.npy").images, nchw)
    with pytest.raises(ValueError, match=r"outside value_range=\(0, 100\)"):
        load_array(tmp_path / "int64.npy", value_range=(0, 100))
    with pytest.raises(ValueError, match="`value_range` must be a pair"):
        load_array(tmp_path / "int64.npy", value_range=(1, 1))


def test_npy_ambiguous_layout_is_an_error_unless_forced(tmp_path):
    nchw = reference_nchw(c=3, h=5, w=3)  # (3, 3, 5, 3): axis 1 and axis 3 both could be channels
    np.save(tmp_path / "amb.npy", nchw)
    with pytest.raises(ValueError, match=r"cannot tell the layout of shape \(3, 3, 5, 3\)"):
        load_array(tmp_path / "amb.npy")
    assert_bytes_round_trip(load_array(tmp_path / "amb.npy", layout="NCHW").images, nchw)
    forced = load_array(tmp_path / "amb.npy", layout="NHWC")
    assert_bytes_round_trip(forced.images, nchw.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="`layout` must be one of"):
        load_array(tmp_path / "amb.npy", layout="HWC")
    with pytest.raises(ValueError, match="does not fit layout='NHW'"):
        load_array(tmp_path / "amb.npy", layout="NHW")
    np.save(tmp_path / "two.npy", reference_nchw(c=2))
    with pytest.raises(ValueError, match="has 2 channels"):
        load_array(tmp_path / "two.npy", layout="NCHW")
    np.save(tmp_path / "five.npy", np.zeros((1, 2, 3, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"got \(1, 2, 3, 4, 5\)"):
        load_array(tmp_path / "five.npy")


def test_npz_keys_and_labels(tmp_path):
    a, b = reference_nchw(seed=1), reference_nchw(seed=2)
    np.savez(tmp_path / "one.npz", images=a)
    assert_bytes_round_trip(load_array(tmp_path / "one.npz").images, a)
    np.savez(tmp_path / "two.npz", a=a, b=b)
    with pytest.raises(ValueError, match=r"several arrays; its keys are \['a', 'b'\]"):
        load_array(tmp_path / "two.npz")
    assert_bytes_round_trip(load_array(tmp_path / "two.npz", key="b").images, b)
    with pytest.raises(ValueError, match=r"`key` 'c' is not in .*keys are \['a', 'b'\]"):
        load_array(tmp_path / "two.npz", key="c")
    np.savez(tmp_path / "lab.npz", x=a, labels=np.array([4, 5, 6]))
    labelled = load_array(tmp_path / "lab.npz")
    np.testing.assert_array_equal(labelled.labels.numpy(), [4, 5, 6])
    assert labelled.take(2).labels.tolist() == [4, 5]
    np.savez(tmp_path / "badlab.npz", x=a, labels=np.array([4, 5]))
    with pytest.raises(ValueError, match=r"must be 3 integers"):
        load_array(tmp_path / "badlab.npz")
    np.save(tmp_path / "single.npy", a)
    with pytest.raises(ValueError, match="only for .npz"):
        load_array(tmp_path / "single.npy", key="a")


def test_npy_bad_values_and_files(tmp_path):
    x = reference_nchw() / 255.0
    x[1, 2, 3, 4] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"nan.npy'.*element \(1, 2, 3, 4\) is nan"):
        load_array(tmp_path / "nan.npy")
    x[1, 2, 3, 4] = np.inf
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(ValueError, match="must be finite"):
        load_array(tmp_path / "inf.npy")
    np.save(tmp_path / "zero.npy", np.zeros((0, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"zero images \(shape \(0, 4, 4\)\)"):
        load_array(tmp_path / "zero.npy")
    np.save(tmp_path / "obj.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object arrays are refused"):
        load_array(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="junk.npy' is not a readable"):
        load_array(tmp_path / "junk.npy")
    np.save(tmp_path / "bool.npy", np.zeros((2, 3, 3), bool))
    with pytest.raises(ValueError, match="integers or floats, got dtype bool"):
        load_array(tmp_path / "bool.npy")
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        load_array(tmp_path / "absent.npy")


# ------------------------------------------------------------------------------------ conversions

def test_channel_conversion_against_references():
    rng = np.random.default_rng(3)
    grey = torch.from_numpy(rng.uniform(-1, 1, (2, 1, 4, 5)).astype(np.float32))
    rgb = data.convert_channels(grey, 3)
    assert rgb.shape == (2, 3, 4, 5) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    colour = rng.uniform(-1, 1, (2, 3, 4, 5)).astype(np.float32)
    luma = colour.astype(np.float64)
    luma = 0.299 * luma[:, 0] + 0.587 * luma[:, 1] + 0.114 * luma[:, 2]
    out = data.convert_channels(torch.from_numpy(colour), 1)
    np.testing.assert_allclose(out[:, 0].numpy(), luma, rtol=0, atol=1e-7)
    white = torch.ones(1, 3, 2, 2)
    assert torch.equal(data.convert_channels(white, 1), torch.ones(1, 1, 2, 2))  # range kept
    assert data.convert_channels(grey, 1) is grey
    with pytest.raises(ValueError, match="`channels` must be one of"):
        data.convert_channels(grey, 2)


@pytest.mark.parametrize("source,target", [(8, 16), (8, 28), (8, 32), (32, 16), (28, 8), (32, 11)])
def test_resize_matches_pil_bilinear(source, target):
    """Reference: PIL's BILINEAR resize of float ('F' mode) images, an independent implementation."""
    Image = pytest.importorskip("PIL.Image")
    x = np.random.default_rng(source * 100 + target).uniform(-1, 1, (2, 1, source, source))
    x = x.astype(np.float32)
    ours = data.resize_images(torch.from_numpy(x), target).numpy()
    ref = np.stack([np.asarray(Image.fromarray(x[i, 0]).resize((target, target), Image.BILINEAR))
                    for i in range(2)])
    np.testing.assert_allclose(ours[:, 0], ref, rtol=0, atol=5e-6)
    if source > target:  # negative control: without antialiasing the down-scaling differs
        plain = F.interpolate(torch.from_numpy(x), size=(target, target), mode="bilinear",
                              align_corners=False).numpy()
        assert np.abs(plain[:, 0] - ref).max() > 1e-2


def test_resize_keeps_constants_range_and_identity():
    flat = torch.full((1, 3, 8, 8), 0.25)
    assert torch.allclose(data.resize_images(flat, (5, 13)), torch.full((1, 3, 5, 13), 0.25),
                          rtol=0, atol=1e-7)
    extreme = torch.where(torch.rand(3, 1, 9, 9, generator=torch.Generator().manual_seed(0)) > 0.5,
                          1.0, -1.0)
    for size in (4, 17, 32):
        out = data.resize_images(extreme, size)
        assert out.min() >= -1 and out.max() <= 1
    assert data.resize_images(flat, 8) is flat
    with pytest.raises(ValueError, match="`image_size` must be an integer >= 1"):
        data.resize_images(flat, 0)
    with pytest.raises(ValueError, match="pair"):
        data.resize_images(flat, (1, 2, 3))


# ------------------------------------------------------------------------------------ embedded

@needs_sklearn
def test_digits_native_and_resized():
    from sklearn.datasets import load_digits
    ref = load_digits()
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 1, 8, 8) and ds.source == "sklearn:digits"
    expected = torch.from_numpy((ref.images / 8.0 - 1.0).astype(np.float32))
    assert torch.equal(ds.images[:, 0], expected)
    assert ds.images.min() == -1.0 and ds.images.max() == 1.0
    np.testing.assert_array_equal(ds.labels.numpy(), ref.target)
    big = load_dataset("digits", image_size=28, channels=3)
    assert big.images.shape == (1797, 3, 28, 28)
    assert big.images.min() >= -1 and big.images.max() <= 1
    assert torch.equal(big.images, data.resize_images(ds.images, 28).repeat(1, 3, 1, 1))
    assert torch.equal(load_dataset("digits", limit=10).images, ds.images[:10])


@needs_sklearn
def test_photo_patches_are_seeded_crops_with_flips():
    kw = dict(num_patches=64, patch_size=16, downscale=4)
    ds = load_dataset("photo-patches", seed=5, **kw)
    assert ds.images.shape == (64, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert torch.equal(ds.images, load_dataset("photo-patches", seed=5, **kw).images)
    other = load_dataset("photo-patches", seed=6, **kw)
    assert not torch.equal(ds.images, other.images)
    # reference: cut the same crops with plain numpy slicing from the down-scaled photos
    photos = [p.numpy() for p in data._sample_photos(4.0)]
    assert photos[0].shape == (3, 107, 160)
    photo, top, left, flip = data._patch_positions([p.shape[1:] for p in photos], 16, 64, 5)
    assert 0 < flip.sum() < 64 and set(photo.tolist()) == {0, 1}
    for i in range(64):
        crop = photos[photo[i]][:, top[i]:top[i] + 16, left[i]:left[i] + 16]
        crop = crop[:, :, ::-1] if flip[i] else crop
        np.testing.assert_array_equal(ds.images[i].numpy(), crop.astype(np.float32))
    np.testing.assert_array_equal(ds.labels.numpy(), photo)
    with pytest.raises(ValueError, match=r"`patch_size` = 200 must be <= .* 107"):
        data.load_photo_patches(patch_size=200)
    with pytest.raises(ValueError, match="`downscale` must be a finite number >= 1"):
        data.load_photo_patches(downscale=0.5)


# ------------------------------------------------------------------------------------ sampler

def tiny_dataset(n: int = 7) -> ImageDataset:
    images = torch.linspace(-1, 1, n).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageDataset(images, torch.arange(n), "tiny", "test", "identity")


def reference_stream(n: int, seed: int, epochs: int) -> np.ndarray:
    return np.concatenate([np.random.default_rng(np.random.SeedSequence([seed, e])).permutation(n)
                           for e in range(epochs)])


@pytest.mark.parametrize("batch_size", [1, 3, 7, 10])
def test_sampler_is_the_documented_stream(batch_size):
    n, seed = 7, 11
    sampler = BatchSampler(tiny_dataset(n), batch_size, seed=seed)
    drawn = np.concatenate([sampler.next_indices().numpy() for _ in range(9)])
    np.testing.assert_array_equal(drawn, reference_stream(n, seed, epochs=14)[:9 * batch_size])
    for e in range(len(drawn) // n):  # every epoch is a permutation
        assert sorted(drawn[e * n:(e + 1) * n].tolist()) == list(range(n))


def test_sampler_resumes_bitwise_in_a_fresh_object():
    images = torch.rand(100, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ds = ImageDataset(images, torch.arange(100), "random", "test", "identity")
    first = ds.batches(32, seed=3)
    for _ in range(5):  # 160 images: crosses an epoch boundary
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # a plain, serialisable dict
    assert state["epoch"] == 1 and state["position"] == 60
    after = [next(first) for _ in range(6)]
    fresh = BatchSampler(ds, 32, seed=999)  # the seed comes back from the state
    fresh.load_state_dict(state)
    for expected in after:
        assert torch.equal(next(fresh), expected)
    before = fresh.state_dict()
    images, labels = fresh.next_batch()
    again = BatchSampler(ds, 32, seed=0)
    again.load_state_dict(before)
    index = again.next_indices()
    assert torch.equal(images, ds.images[index]) and torch.equal(labels, ds.labels[index])


def test_sampler_seeding_and_state_errors():
    ds = tiny_dataset()
    gen = lambda: torch.Generator().manual_seed(42)  # noqa: E731
    a, b = ds.batches(4, generator=gen()), ds.batches(4, generator=gen())
    assert all(torch.equal(next(a), next(b)) for _ in range(5))
    c = ds.batches(4, generator=torch.Generator().manual_seed(43))
    assert a.seed != c.seed
    with pytest.raises(TypeError, match="exactly one of `seed` and `generator`"):
        ds.batches(4)
    with pytest.raises(TypeError, match="exactly one"):
        ds.batches(4, seed=1, generator=gen())
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        ds.batches(0, seed=1)
    sampler = ds.batches(4, seed=1)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match=r"`state\['batch_size'\]` = 4 does not match .* = 5"):
        BatchSampler(ds, 5, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="num_items"):
        BatchSampler(tiny_dataset(8), 4, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match=r"missing \['epoch'\]"):
        sampler.load_state_dict({k: v for k, v in state.items() if k != "epoch"})
    with pytest.raises(ValueError, match=r"`state\['position'\]` must be < num_items = 7"):
        sampler.load_state_dict(dict(state, position=7))
    with pytest.raises(ValueError, match=r"state\['epoch'\]"):
        sampler.load_state_dict(dict(state, epoch=-1))


# ------------------------------------------------------------------------------------ dataset type

def test_image_dataset_validates_its_fields():
    ok = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match="float32"):
        ImageDataset(ok.double(), None, "x", "src", "s")
    with pytest.raises(ValueError, match=r"lie in \[-1, 1\], got values in \[0.0, 2.0\]"):
        ImageDataset(ok + torch.tensor([0.0, 2.0]).view(2, 1, 1, 1), None, "x", "src", "s")
    with pytest.raises(ValueError, match="must be finite"):
        ImageDataset(ok.index_put((torch.tensor([1]),), torch.tensor(float("nan"))), None, "x",
                     "src", "s")
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3 \\(RGB\\) channels"):
        ImageDataset(torch.zeros(2, 2, 3, 3), None, "x", "src", "s")
    with pytest.raises(ValueError, match="at least one image"):
        ImageDataset(torch.zeros(0, 1, 3, 3), None, "x", "src", "s")
    with pytest.raises(ValueError, match=r"int64 tensor of shape \(2,\)"):
        ImageDataset(ok, torch.arange(3), "x", "src", "s")


# ------------------------------------------------------------------------------------ dispatcher

def test_load_dataset_dispatch_and_errors(tmp_path):
    weird = tmp_path / "a:b"  # a colon inside the path: only the first one splits the spec
    weird.mkdir()
    images, _ = mnist_dir(weird, gz=True)
    ds = load_dataset(f"mnist:{weird}", image_size=8, channels=3, limit=3)
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.shape == (3,)
    plain = load_dataset(f"MNIST:{weird}")
    assert_bytes_round_trip(plain.images[:, 0], images)
    np.savez(tmp_path / "two.npz", a=reference_nchw(seed=1), b=reference_nchw(seed=2))
    assert_bytes_round_trip(load_dataset(f"npz:{tmp_path / 'two.npz'}", key="b").images,
                            reference_nchw(seed=2))
    cifar_batch(tmp_path / "data_batch_1", *random_cifar(2, seed=0))
    assert load_dataset(f"cifar10:{tmp_path}", channels=1).images.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match=r"'svhn' is not a known dataset; valid specs are "
                                         r"\['digits', 'photo-patches', 'mnist:PATH'"):
        load_dataset("svhn")
    with pytest.raises(ValueError, match="needs a path after the colon"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("digits:/tmp/x")
    with pytest.raises(TypeError, match=r"does not take \['kye'\]; it accepts \['key', 'layout'"):
        load_dataset(f"npy:{tmp_path / 'two.npz'}", kye="a")
    with pytest.raises(TypeError, match=r"'digits' does not take \['patch_size'\]"):
        load_dataset("digits", patch_size=8)
    with pytest.raises(FileNotFoundError, match="missing-dir"):
        load_dataset(f"cifar10:{tmp_path / 'missing-dir'}")
    with pytest.raises(TypeError, match="`spec` must be a string"):
        load_dataset(Path("digits"))
