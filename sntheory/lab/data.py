"""Images for the discriminator lab: two embedded datasets, loaders for files a user has, a sampler.

Every source ends in one type, :class:`ImageDataset`: ``images`` is a float32 tensor ``(N, C, H, W)``
in ``[-1, 1]``, ``labels`` an optional int64 tensor ``(N,)``. Nothing is downloaded.

Sources and their scaling (the exact map from stored values to ``images``):

=====================  ===========================================  ==============================
spec                   what                                         scaling
=====================  ===========================================  ==============================
``digits``             ``sklearn.datasets.load_digits``: 1797       ``x / 8 - 1`` (x in 0..16)
                       8x8 grey digits, labels 0..9
``photo-patches``      random crops of sklearn's two sample         ``x / 127.5 - 1`` (uint8 x),
                       photographs (china.jpg, flower.jpg), after   applied after the down-scaling
                       down-scaling, with random horizontal flips
``mnist:PATH``         idx files (``train-images-idx3-ubyte``,      ``x / 127.5 - 1``
                       optionally ``.gz``), labels if present
``cifar10:PATH``       CIFAR-10 python batches (a file, or a        ``x / 127.5 - 1``
                       directory of ``data_batch_*``/``test_batch``)
``npy:PATH``           ``.npy`` / ``.npz`` arrays, layouts          uint8 and other integers:
                       ``NHW``, ``NHWC``, ``NCHW``                  ``x / 127.5 - 1``; floats:
                                                                    see :func:`load_array`
=====================  ===========================================  ==============================

Every scaling is computed in float64 and rounded once to float32, so for uint8 data
``round((images + 1) * 127.5)`` gives back the stored bytes exactly.

Resizing (``image_size``) is bilinear with antialiasing,
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=True)``: a
triangle filter whose support widens with the down-scaling factor (the filter PIL's ``BILINEAR``
uses), plain bilinear interpolation when up-scaling. Its weights are non-negative and sum to one, so
it commutes with the affine scaling above and keeps values in ``[-1, 1]`` (clamped against
rounding). Channel conversion: grey -> RGB repeats the plane; RGB -> grey is the ITU-R BT.601 luma
``0.299 R + 0.587 G + 0.114 B`` (weights sum to one, so again independent of the affine scaling).

The sampler (:class:`BatchSampler`) draws an infinite stream of shuffled batches whose state is a
plain dict (seed, epoch, position): restoring it in a fresh object continues the exact same
sequence, bitwise.

CIFAR batches are pickles; they are read with an unpickler that only rebuilds numpy arrays, dicts,
lists and scalars, so a tampered file cannot run code.
"""
from __future__ import annotations

import gzip
import importlib
import inspect
import io
import numbers
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import _show, require_choice, require_positive_int

__all__ = [
    "ImageDataset", "BatchSampler", "load_dataset", "dataset_specs",
    "load_digits_dataset", "load_photo_patches", "load_mnist", "load_cifar10", "load_array",
    "resize_images", "convert_channels",
]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
CIFAR_SIDE = 32
LAYOUTS = ("NHW", "NHWC", "NCHW")
_RESIZE_CHUNK = 4096  # images per interpolate call (bounds the temporary memory)


# ---------------------------------------------------------------------------------------------
# The common type
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images ``(N, C, H, W)`` float32 in ``[-1, 1]``, optional int64 labels ``(N,)``.

    ``name`` is the short name (``"digits"``, ``"mnist"``, ...), ``source`` where the pixels came
    from (a path, or ``"sklearn:digits"``), ``scaling`` the map from stored values to ``images``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    source: str
    scaling: str

    def __post_init__(self) -> None:
        x = self.images
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`images` must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != torch.float32 or x.dim() != 4:
            raise ValueError(f"`images` must be a float32 tensor (N, C, H, W), got dtype {x.dtype} "
                             f"and shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if n == 0 or h == 0 or w == 0:
            raise ValueError(f"`images` of {self.source!r} must hold at least one image of "
                             f"non-zero size, got shape {tuple(x.shape)}")
        if c not in (1, 3):
            raise ValueError(f"`images` of {self.source!r} must have 1 (grey) or 3 (RGB) channels, "
                             f"got shape {tuple(x.shape)}")
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = tuple(int(i) for i in (~finite).nonzero()[0])
            raise ValueError(f"`images` of {self.source!r} must be finite, but element {bad} is "
                             f"{float(x[bad])}")
        low, high = float(x.min()), float(x.max())
        if low < -1.0 or high > 1.0:
            raise ValueError(f"`images` of {self.source!r} must lie in [-1, 1], got values in "
                             f"[{low}, {high}]")
        if self.labels is not None:
            y = self.labels
            if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (n,):
                raise ValueError(f"`labels` of {self.source!r} must be None or an int64 tensor of "
                                 f"shape ({n},), got {_describe(y)}")

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def take(self, count: int) -> "ImageDataset":
        """The first ``count`` images (all of them when ``count >= num_images``)."""
        count = require_positive_int("limit", count)
        if count >= self.num_images:
            return self
        labels = None if self.labels is None else self.labels[:count].clone()
        return ImageDataset(self.images[:count].clone(), labels, self.name, self.source,
                            self.scaling)

    def converted(self, *, image_size: int | tuple[int, int] | None = None,
                  channels: int | None = None) -> "ImageDataset":
        """Resize to ``image_size`` (``S`` or ``(H, W)``) and convert to ``channels`` (1 or 3).

        Resizing is antialiased bilinear (see the module docstring); an unchanged size or channel
        count leaves the pixels bitwise untouched.
        """
        images = self.images
        if channels is not None:
            images = convert_channels(images, channels)
        if image_size is not None:
            images = resize_images(images, image_size)
        if images is self.images:
            return self
        return ImageDataset(images, self.labels, self.name, self.source, self.scaling)

    def batches(self, batch_size: int, *, seed: int | None = None,
                generator: torch.Generator | None = None) -> "BatchSampler":
        """An infinite, resumable, shuffled batch stream (see :class:`BatchSampler`).

        Give ``seed`` or ``generator`` (exactly one); a generator contributes one draw (a 62-bit
        seed), so the stream is fixed by the generator's state at this call.
        """
        if (seed is None) == (generator is None):
            raise TypeError(f"give exactly one of `seed` and `generator`, got seed={seed!r} and "
                            f"generator={generator!r}")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"`generator` must be a torch.Generator, got "
                                f"{type(generator).__name__}")
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
        return BatchSampler(self, batch_size, seed=seed)


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------

class BatchSampler:
    """Infinite shuffled batches of a dataset, resumable bitwise from a plain-dict state.

    The index stream is the concatenation of one permutation of ``range(N)`` per epoch, epoch
    ``e``'s permutation drawn by ``numpy.random.default_rng(SeedSequence([seed, e]))``; batch ``k``
    is items ``[k B, (k + 1) B)`` of that stream. So every image appears exactly once per epoch,
    every batch has exactly ``B`` images (a batch may straddle two epochs, and ``B > N`` is
    allowed), and the position in the stream, ``(epoch, position)``, determines everything after
    it. ``state_dict()`` is a JSON-serialisable dict; ``load_state_dict`` on a fresh sampler of the
    same dataset and batch size continues the same sequence.
    """

    _STATE_KEYS = ("version", "seed", "epoch", "position", "batch_size", "num_items")

    def __init__(self, dataset: ImageDataset, batch_size: int, *, seed: int):
        if not isinstance(dataset, ImageDataset):
            raise TypeError(f"`dataset` must be an ImageDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = require_positive_int("batch_size", batch_size)
        self.seed = require_positive_int("seed", seed, minimum=0)
        self.num_items = dataset.num_images
        self.epoch = 0
        self.position = 0
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch]))
            self._perm = rng.permutation(self.num_items)
            self._perm_epoch = epoch
        return self._perm

    def next_indices(self) -> torch.Tensor:
        """Indices (int64, ``(B,)``) of the next batch; advances the state."""
        parts, need = [], self.batch_size
        while need > 0:
            take = min(need, self.num_items - self.position)
            parts.append(self._permutation(self.epoch)[self.position:self.position + take])
            need -= take
            self.position += take
            if self.position == self.num_items:
                self.epoch += 1
                self.position = 0
        return torch.from_numpy(np.concatenate(parts).astype(np.int64))

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(images (B, C, H, W), labels (B,) or None)`` of the next batch."""
        index = self.next_indices()
        labels = None if self.dataset.labels is None else self.dataset.labels[index]
        return self.dataset.images[index], labels

    def __iter__(self) -> "BatchSampler":
        return self

    def __next__(self) -> torch.Tensor:
        """The next batch of images ``(B, C, H, W)``."""
        return self.dataset.images[self.next_indices()]

    def state_dict(self) -> dict:
        return {"version": 1, "seed": self.seed, "epoch": self.epoch, "position": self.position,
                "batch_size": self.batch_size, "num_items": self.num_items}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a dict from :meth:`state_dict`), checked against this sampler."""
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be a dict from BatchSampler.state_dict(), got "
                            f"{type(state).__name__}")
        missing = [k for k in self._STATE_KEYS if k not in state]
        unknown = sorted(set(state) - set(self._STATE_KEYS))
        if missing or unknown:
            raise ValueError(f"`state` must have exactly the keys {list(self._STATE_KEYS)}; "
                             f"missing {missing}, unknown {unknown}")
        for key in self._STATE_KEYS:
            require_positive_int(f"state[{key!r}]", state[key], minimum=0)
        if state["version"] != 1:
            raise ValueError(f"`state['version']` must be 1, got {state['version']!r}")
        for key, mine in (("batch_size", self.batch_size), ("num_items", self.num_items)):
            if state[key] != mine:
                raise ValueError(f"`state[{key!r}]` = {state[key]} does not match this sampler's "
                                 f"{key} = {mine}: a state only resumes the same dataset and "
                                 f"batch size")
        if state["position"] >= self.num_items:
            raise ValueError(f"`state['position']` must be < num_items = {self.num_items}, got "
                             f"{state['position']}")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm_epoch = -1


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------

def _size_pair(image_size) -> tuple[int, int]:
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(f"`image_size` must be an int S or a pair (H, W), got "
                             f"{_show(image_size)}")
        return (require_positive_int("image_size[0]", image_size[0]),
                require_positive_int("image_size[1]", image_size[1]))
    side = require_positive_int("image_size", image_size)
    return side, side


def resize_images(images: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(N, C, H, W)`` to ``image_size``, clamped to ``[-1, 1]``."""
    size = _size_pair(image_size)
    if tuple(images.shape[2:]) == size:
        return images
    out = torch.empty(images.shape[:2] + size, dtype=images.dtype)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start:start + _RESIZE_CHUNK]
        out[start:start + _RESIZE_CHUNK] = F.interpolate(
            chunk, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp_(-1.0, 1.0)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repeating the plane; RGB -> grey by BT.601 luma (float64, rounded once)."""
    channels = require_positive_int("channels", channels)
    require_choice("channels", channels, (1, 3))
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:  # (N, 1, H, W) -> (N, 3, H, W)
        return images.repeat(1, 3, 1, 1)
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64).view(1, 3, 1, 1)
    grey = (images.double() * weights).sum(dim=1, keepdim=True)  # (N, 1, H, W)
    return grey.clamp_(-1.0, 1.0).float()


def _scale_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 -> ``x / 127.5 - 1`` in float64, rounded once to float32."""
    return torch.from_numpy((array.astype(np.float64) / 127.5 - 1.0).astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Embedded datasets (scikit-learn)
# ---------------------------------------------------------------------------------------------

def _sklearn_datasets():
    try:
        return importlib.import_module("sklearn.datasets")
    except ImportError as err:
        raise ImportError("the embedded datasets need scikit-learn: pip install scikit-learn"
                          ) from err


def load_digits_dataset() -> ImageDataset:
    """sklearn's 1797 8x8 grey digits, ``x / 8 - 1`` (x in 0..16), labels 0..9."""
    digits = _sklearn_datasets().load_digits()
    raw = np.asarray(digits.images, dtype=np.float64)  # (1797, 8, 8), integers 0..16
    images = torch.from_numpy((raw / 8.0 - 1.0).astype(np.float32)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return ImageDataset(images, labels, "digits", "sklearn:digits", "x/8-1 (x in 0..16)")


def _sample_photos(downscale: float) -> list[torch.Tensor]:
    """sklearn's two photographs as float64 ``(3, H', W')`` in ``[-1, 1]``, down-scaled."""
    try:
        photos = _sklearn_datasets().load_sample_images().images  # two (427, 640, 3) uint8
    except ImportError as err:  # sklearn reads the jpgs with PIL
        raise ImportError("the photo patches need pillow: pip install pillow") from err
    out = []
    for photo in photos:
        x = _scale_uint8(np.ascontiguousarray(photo.transpose(2, 0, 1))).double()  # (3, H, W)
        if downscale != 1.0:
            size = (max(1, round(x.shape[1] / downscale)), max(1, round(x.shape[2] / downscale)))
            x = F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False,
                              antialias=True)[0].clamp_(-1.0, 1.0)
        out.append(x)
    return out


def _patch_positions(shapes: list[tuple[int, int]], patch_size: int, num_patches: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(photo index, top row, left column, flip) of every patch, one seeded numpy stream."""
    rng = np.random.default_rng(np.random.SeedSequence([seed]))
    photo = rng.integers(0, len(shapes), size=num_patches)
    rows = np.array([h - patch_size + 1 for h, _ in shapes])[photo]
    cols = np.array([w - patch_size + 1 for _, w in shapes])[photo]
    top = rng.integers(0, rows)
    left = rng.integers(0, cols)
    flip = rng.random(num_patches) < 0.5
    return photo, top, left, flip


def load_photo_patches(*, patch_size: int = 32, num_patches: int = 4096, downscale: float = 4.0,
                       seed: int = 0) -> ImageDataset:
    """``num_patches`` random RGB crops of side ``patch_size`` from sklearn's two sample photos.

    Each photograph (427x640, china.jpg and flower.jpg) is first down-scaled by ``downscale``
    (antialiased bilinear; the default 4 gives 107x160, so a 32x32 patch spans a roof, a petal, a
    branch rather than a flat patch of sky), then each patch picks a photo, a top-left corner
    (uniform over valid positions) and a horizontal flip (probability 1/2) from one numpy stream
    seeded by ``SeedSequence([seed])``. The same arguments give bitwise the same patches. Labels
    are the photo index (0 china, 1 flower). Scaling ``x / 127.5 - 1`` before down-scaling.
    """
    patch_size = require_positive_int("patch_size", patch_size, minimum=2)
    num_patches = require_positive_int("num_patches", num_patches)
    seed = require_positive_int("seed", seed, minimum=0)
    if isinstance(downscale, bool) or not isinstance(downscale, numbers.Real) \
            or not np.isfinite(downscale) or downscale < 1:
        raise ValueError(f"`downscale` must be a finite number >= 1 (1 keeps the full "
                         f"resolution), got {_show(downscale)}")
    photos = _sample_photos(float(downscale))
    shapes = [(int(p.shape[1]), int(p.shape[2])) for p in photos]
    smallest = min(min(s) for s in shapes)
    if patch_size > smallest:
        raise ValueError(f"`patch_size` = {patch_size} must be <= the down-scaled photo side "
                         f"{smallest} (photos {shapes} after downscale={downscale})")
    photo, top, left, flip = _patch_positions(shapes, patch_size, num_patches, seed)
    images = torch.empty((num_patches, 3, patch_size, patch_size), dtype=torch.float32)
    for i in range(num_patches):
        patch = photos[photo[i]][:, top[i]:top[i] + patch_size, left[i]:left[i] + patch_size]
        images[i] = patch.flip(-1) if flip[i] else patch
    labels = torch.from_numpy(photo.astype(np.int64))
    return ImageDataset(images, labels, "photo-patches",
                        f"sklearn:sample_images(china.jpg,flower.jpg) downscale={downscale:g} "
                        f"patch={patch_size} n={num_patches} seed={seed}",
                        "x/127.5-1 (uint8 x), then antialiased bilinear down-scaling")


# ---------------------------------------------------------------------------------------------
# Files: helpers
# ---------------------------------------------------------------------------------------------

def _describe(value) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    return f"{type(value).__name__} {_show(value)}"


def _existing(path, name: str = "path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a path (str or os.PathLike), got {type(path).__name__}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(f"`{name}` {str(resolved)!r} does not exist")
    return resolved


def _check_finite(array: np.ndarray, what: str) -> None:
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{what} must be finite, but element {bad} is {float(array[bad])} "
                         f"({int((~finite).sum())} non-finite values in all)")


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic 1f 8b."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"`path` {str(path)!r} is a corrupt or truncated gzip file: {err}"
                         ) from err


def _integer_labels(values, count: int, where: str) -> torch.Tensor:
    labels = np.asarray(values)
    if labels.ndim != 1 or labels.shape[0] != count or labels.dtype.kind not in "iu":
        raise ValueError(f"labels of {where} must be {count} integers (one per image), got "
                         f"{_describe(labels)}")
    return torch.from_numpy(labels.astype(np.int64))


def _finish(array_nchw_uint8: np.ndarray, labels, name: str, source: str,
            limit: int | None) -> ImageDataset:
    if limit is not None:
        limit = require_positive_int("limit", limit)
        array_nchw_uint8 = array_nchw_uint8[:limit]
        labels = None if labels is None else labels[:limit]
    return ImageDataset(_scale_uint8(array_nchw_uint8), labels, name, source, "x/127.5-1 (uint8 x)")


# ---------------------------------------------------------------------------------------------
# MNIST idx
# ---------------------------------------------------------------------------------------------

def _parse_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes: big-endian magic, ``ndim`` big-endian uint32 dims, data."""
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise ValueError(f"`path` {str(path)!r} is truncated: an idx file starts with a 4-byte "
                         f"magic number, the file has {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kinds = {IDX_IMAGES_MAGIC: "images (3-d unsigned bytes)",
                 IDX_LABELS_MAGIC: "labels (1-d unsigned bytes)"}
        raise ValueError(f"`path` {str(path)!r} has idx magic number {found} (0x{found:08x}); "
                         f"{kinds[magic]} need {magic} (0x{magic:08x})"
                         + (f" -- this looks like a {kinds[found].split()[0]} file"
                            if found in kinds else ""))
    if len(data) < header:
        raise ValueError(f"`path` {str(path)!r} is truncated: an idx file with {ndim} dimension(s) "
                         f"needs a {header}-byte header, the file has {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise ValueError(f"`path` {str(path)!r} has {len(data)} bytes but its header (dims {dims}) "
                         f"says {expected}: the file is truncated or corrupt")
    if dims[0] == 0 or any(d == 0 for d in dims):
        raise ValueError(f"`path` {str(path)!r} holds zero images or empty images: dims {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


_MNIST_STEMS = {"train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte")}


def _find_mnist_images(directory: Path, split: str) -> Path:
    tried = []
    for stem in _MNIST_STEMS[split]:
        for candidate in (directory / stem, directory / (stem + ".gz")):
            tried.append(candidate.name)
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"`path` {str(directory)!r} is a directory without MNIST {split} "
                            f"images: looked for {tried}")


def load_mnist(path, *, split: str = "train", labels_path=None,
               limit: int | None = None) -> ImageDataset:
    """MNIST-format idx images (magic 2051), ``x / 127.5 - 1``; labels (magic 2049) if found.

    ``path`` is the images file (raw or ``.gz``) or a directory holding
    ``{train,t10k}-images-idx3-ubyte[.gz]`` (``split`` picks which). Labels come from
    ``labels_path`` or, when not given, from the sibling file named with ``labels-idx1`` in place of
    ``images-idx3`` if it exists. Header, dimensions and file length are all checked.
    """
    require_choice("split", split, tuple(_MNIST_STEMS))
    path = _existing(path)
    images_path = _find_mnist_images(path, split) if path.is_dir() else path
    images = _parse_idx(images_path, IDX_IMAGES_MAGIC, 3)  # (N, H, W)
    if labels_path is not None:
        labels_file: Path | None = _existing(labels_path, "labels_path")
    else:
        sibling = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1")
                                        .replace("images.idx3", "labels.idx1"))
        labels_file = sibling if sibling != images_path and sibling.is_file() else None
    labels = None
    if labels_file is not None:
        raw_labels = _parse_idx(labels_file, IDX_LABELS_MAGIC, 1)
        if raw_labels.shape[0] != images.shape[0]:
            raise ValueError(f"`labels_path` {str(labels_file)!r} holds {raw_labels.shape[0]} "
                             f"labels but {str(images_path)!r} holds {images.shape[0]} images; "
                             f"they must match")
        labels = torch.from_numpy(raw_labels.astype(np.int64))
    return _finish(images[:, None], labels, "mnist", str(images_path), limit)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python batches
# ---------------------------------------------------------------------------------------------

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays and dtypes (and builtin containers): no code from the file runs."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds "
                                         f"only numpy arrays, lists and dicts")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core"):]
        return getattr(importlib.import_module(module), name)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (N, 3, 32, 32) uint8, labels (N,) or None) of one batch file."""
    try:
        with open(path, "rb") as handle:
            batch = _ArrayOnlyUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError) as err:
        raise ValueError(f"`path` {str(path)!r} is not a readable CIFAR python batch (a pickled "
                         f"dict with b'data' and b'labels'): {type(err).__name__}: {err}") from err
    if not isinstance(batch, dict):
        raise ValueError(f"`path` {str(path)!r} must hold a dict with b'data' and b'labels', got "
                         f"{type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch:
        raise ValueError(f"`path` {str(path)!r} has no b'data' entry (keys {sorted(map(str, batch))})")
    data = np.asarray(batch["data"])
    side2 = CIFAR_SIDE * CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * side2:
        raise ValueError(f"b'data' of {str(path)!r} must be uint8 of shape (N, {3 * side2}) "
                         f"(3 channel-major 32x32 planes), got {_describe(data)}")
    if data.shape[0] == 0:
        raise ValueError(f"b'data' of {str(path)!r} holds zero images")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    key = next((k for k in ("labels", "fine_labels") if k in batch), None)
    labels = None
    if key is not None:
        labels = np.asarray(batch[key])
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ValueError(f"b'{key}' of {str(path)!r} must be {images.shape[0]} integers (one "
                             f"per image), got {_describe(labels)}")
    return images, labels


_CIFAR_SPLITS = {"train": "data_batch_", "test": "test_batch"}


def _cifar_files(directory: Path, split: str) -> list[Path]:
    nested = directory / "cifar-10-batches-py"
    if nested.is_dir():
        directory = nested
    if split == "test":
        files = [p for p in [directory / "test_batch"] if p.is_file()]
    else:
        numbered = [(int(m.group(1)), p) for p in directory.iterdir()
                    if p.is_file() and (m := re.fullmatch(r"data_batch_(\d+)", p.name))]
        files = [p for _, p in sorted(numbered)]
    if not files:
        raise FileNotFoundError(f"`path` {str(directory)!r} holds no CIFAR {split} batches: looked "
                                f"for {_CIFAR_SPLITS[split]}{'*' if split == 'train' else ''}")
    return files


def load_cifar10(path, *, split: str = "train", limit: int | None = None) -> ImageDataset:
    """CIFAR-10 python batches, ``x / 127.5 - 1``, with labels.

    ``path`` is one batch file or a directory (or its parent holding ``cifar-10-batches-py``);
    ``split="train"`` reads ``data_batch_1, data_batch_2, ...`` in numeric order, ``"test"`` reads
    ``test_batch``. Each batch is a pickled dict: ``b"data"`` (N, 3072) uint8 holding the R, G, B
    planes of a 32x32 image one after another, ``b"labels"`` N integers.
    """
    require_choice("split", split, tuple(_CIFAR_SPLITS))
    path = _existing(path)
    files = _cifar_files(path, split) if path.is_dir() else [path]
    parts = [_cifar_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = None
    if all(p[1] is not None for p in parts):
        labels = torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.int64))
    elif any(p[1] is not None for p in parts):
        raise ValueError(f"`path` {str(path)!r}: some batches have labels and some do not "
                         f"({[str(f) for f, p in zip(files, parts) if p[1] is None]} lack them)")
    return _finish(images, labels, "cifar10", str(path), limit)


# ---------------------------------------------------------------------------------------------
# .npy / .npz
# ---------------------------------------------------------------------------------------------

def _guess_layout(shape: tuple[int, ...], path: Path) -> str:
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise ValueError(f"array in {str(path)!r} must have shape (N, H, W), (N, H, W, C) or "
                         f"(N, C, H, W), got {shape}")
    last, second = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not second:
        return "NHWC"
    if second and not last:
        return "NCHW"
    raise ValueError(f"cannot tell the layout of shape {shape} in {str(path)!r}: the channel axis "
                     f"(size 1 or 3) must be axis 1 (NCHW) or axis 3 (NHWC) and not both; pass "
                     f"layout='NCHW' or layout='NHWC'")


def load_array(path, *, key: str | None = None, layout: str | None = None,
               value_range: tuple[float, float] | None = None,
               limit: int | None = None) -> ImageDataset:
    """Images from a ``.npy`` or ``.npz`` file (read without pickle), with labels if an npz has them.

    ``key`` picks the array of an ``.npz`` (default: its only array, or its only array besides
    ``labels``/``y``). Layout heuristic (``layout`` overrides it): 3-d is ``NHW``; 4-d is ``NHWC``
    when only the last axis has size 1 or 3, ``NCHW`` when only axis 1 has; anything else is
    ambiguous and an error. Channels must be 1 or 3.

    Scaling to ``[-1, 1]``: ``value_range=(lo, hi)`` maps ``lo -> -1`` and ``hi -> 1``, i.e.
    ``2 (x - lo) / (hi - lo) - 1`` in float64, values outside are an error. Default range: integer
    arrays ``(0, 255)`` (so uint8 gives exactly ``x / 127.5 - 1``); float arrays ``(0, 1)`` when
    all values lie in ``[0, 1]``, else ``(-1, 1)`` (kept as they are) when they lie in ``[-1, 1]``,
    else an error asking for ``value_range``. NaN or infinity is an error.
    """
    path = _existing(path)
    if layout is not None:
        require_choice("layout", layout, LAYOUTS)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"`path` {str(path)!r} is not a readable .npy/.npz file (object arrays "
                         f"are refused): {type(err).__name__}: {err}") from err
    labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if key is None:
                image_keys = [n for n in names if n not in ("labels", "y")]
                if len(image_keys) != 1:
                    raise ValueError(f"`key` must name the image array of {str(path)!r} when it "
                                     f"holds several arrays; its keys are {names}")
                key = image_keys[0]
            elif key not in names:
                raise ValueError(f"`key` {key!r} is not in {str(path)!r}; its keys are {names}")
            try:
                array = loaded[key]
                label_key = next((n for n in ("labels", "y") if n in names and n != key), None)
                labels = None if label_key is None else loaded[label_key]
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(f"`path` {str(path)!r}: array {key!r} is unreadable: {err}"
                                 ) from err
    else:
        if key is not None:
            raise ValueError(f"`key` is only for .npz files; {str(path)!r} is a single .npy array, "
                             f"got key={key!r}")
        array = loaded
    where = f"{str(path)!r}" + (f" [{key!r}]" if key is not None else "")
    if array.dtype.kind not in "uif":
        raise ValueError(f"array {where} must hold integers or floats, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        _check_finite(array, f"array {where}")  # indices as stored, before any transpose
    layout = layout or _guess_layout(array.shape, path)
    need = 3 if layout == "NHW" else 4
    if array.ndim != need:
        raise ValueError(f"array {where} has shape {array.shape}, which does not fit "
                         f"layout={layout!r} ({need} axes)")
    if array.shape[0] == 0:
        raise ValueError(f"array {where} holds zero images (shape {array.shape})")
    if labels is not None:
        labels = _integer_labels(labels, array.shape[0], where)  # checked before any limit
    if limit is not None:
        limit = require_positive_int("limit", limit)
        array = array[:limit]
    array = {"NHW": lambda a: a[:, None], "NHWC": lambda a: a.transpose(0, 3, 1, 2),
             "NCHW": lambda a: a}[layout](array)
    if array.shape[1] not in (1, 3):
        raise ValueError(f"array {where} has {array.shape[1]} channels under layout={layout!r}; "
                         f"images must have 1 or 3 channels")
    low, high = float(array.min()), float(array.max())
    if value_range is None:
        if array.dtype.kind in "ui":
            value_range = (0.0, 255.0)
        elif low >= 0.0 and high <= 1.0:
            value_range = (0.0, 1.0)
        elif low >= -1.0 and high <= 1.0:
            value_range = (-1.0, 1.0)
        else:
            raise ValueError(f"float array {where} has values in [{low}, {high}], neither [0, 1] "
                             f"nor [-1, 1]; pass value_range=(lo, hi), e.g. (0, 255)")
    else:
        if (not isinstance(value_range, (tuple, list)) or len(value_range) != 2
                or not all(isinstance(v, numbers.Real) and np.isfinite(v) for v in value_range)
                or not value_range[0] < value_range[1]):
            raise ValueError(f"`value_range` must be a pair (lo, hi) of finite numbers with "
                             f"lo < hi, got {_show(value_range)}")
        value_range = (float(value_range[0]), float(value_range[1]))
    lo, hi = value_range
    if low < lo or high > hi:
        raise ValueError(f"array {where} has values in [{low}, {high}], outside "
                         f"value_range=({lo:g}, {hi:g})")
    scaled = 2.0 * (array.astype(np.float64) - lo) / (hi - lo) - 1.0
    images = torch.from_numpy(np.clip(scaled, -1.0, 1.0).astype(np.float32))
    if labels is not None:
        labels = labels[:images.shape[0]]
    return ImageDataset(images, labels, "npy", str(path),
                        f"2(x-{lo:g})/({hi:g}-{lo:g})-1 ({array.dtype} x, layout {layout})")


# ---------------------------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------------------------

_EMBEDDED = {"digits": load_digits_dataset, "photo-patches": load_photo_patches}
_FILES = {"mnist": load_mnist, "cifar10": load_cifar10, "npy": load_array, "npz": load_array}


def dataset_specs() -> list[str]:
    """The accepted spec forms, for help texts and error messages."""
    return ["digits", "photo-patches", "mnist:PATH", "cifar10:PATH", "npy:PATH", "npz:PATH"]


def _check_kwargs(loader, spec: str, args: dict) -> None:
    params = inspect.signature(loader).parameters
    accepted = [n for n, p in params.items() if p.kind == inspect.Parameter.KEYWORD_ONLY
                and n != "limit"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {spec!r} does not take {unknown}; it accepts {accepted}")


def load_dataset(spec: str, *, image_size: int | tuple[int, int] | None = None,
                 channels: int | None = None, seed: int = 0, limit: int | None = None,
                 **kw) -> ImageDataset:
    """Load a dataset by spec (see :func:`dataset_specs`), then resize / convert channels.

    ``"digits"`` and ``"photo-patches"`` are embedded (scikit-learn); ``"mnist:PATH"``,
    ``"cifar10:PATH"``, ``"npy:PATH"`` / ``"npz:PATH"`` read files (the path may itself contain
    ``:``; ``~`` is expanded). ``seed`` drives the photo patches (the other sources have no
    randomness); ``limit`` keeps the first ``limit`` images; ``kw`` go to the loader
    (``split``, ``labels_path``, ``key``, ``layout``, ``value_range``, ``patch_size``,
    ``num_patches``, ``downscale``). ``image_size`` and ``channels`` convert as
    :meth:`ImageDataset.converted` does, so any dataset can feed any network.
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a string, one of {dataset_specs()}, got "
                        f"{type(spec).__name__}")
    name, sep, target = spec.partition(":")
    name = name.strip().lower()
    if name in _EMBEDDED:
        if sep:
            raise ValueError(f"`spec` {spec!r}: {name!r} is embedded and takes no path; valid "
                             f"specs are {dataset_specs()}")
        loader = _EMBEDDED[name]
        args = dict(kw, seed=seed) if name == "photo-patches" else dict(kw)
        _check_kwargs(loader, spec, args)
        dataset = loader(**args)
        if limit is not None:
            dataset = dataset.take(limit)
    elif name in _FILES:
        if not target.strip():
            raise ValueError(f"`spec` {spec!r} needs a path after the colon, e.g. "
                             f"'{name}:/data/{name}'; valid specs are {dataset_specs()}")
        loader = _FILES[name]
        _check_kwargs(loader, spec, kw)
        dataset = loader(target, limit=limit, **kw)
    else:
        raise ValueError(f"`spec` {spec!r} is not a known dataset; valid specs are "
                         f"{dataset_specs()}")
    return dataset.converted(image_size=image_size, channels=channels)
