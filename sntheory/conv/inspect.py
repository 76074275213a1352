"""``sntheory convnorm``: both norms, their ratio and alpha for saved kernels and models.

Inputs:

* a kernel saved as ``.npy`` or as a tensor in a ``.pt``/``.pth`` file, with the layer geometry given
  explicitly (input size, stride, padding, mode, dilation, groups);
* a ``state_dict`` saved with ``torch.save``: every 4-D tensor is treated as a conv kernel with that
  same explicit geometry (said in the output);
* a whole model saved with ``torch.save(model)``: every ``Conv2d`` is measured in its own geometry,
  its input size recorded by one forward pass of zeros of ``input_shape`` (C x H x W).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .geometry import ConvGeometry, as_kernel_batch
from .operator import conv_operator_norm, layer_norms
from .reshaped import reshaped_kernel_norm, reshaped_kernel_norm_transposed
from .alpha import coverage_alpha

__all__ = ["inspect_kernel", "inspect_path", "format_convnorm_table"]


def inspect_kernel(name: str, w, geometry: ConvGeometry, rtol: float = 1e-6) -> dict:
    """One row: both reshaped norms, the operator-norm interval, the ratio and alpha."""
    arr, single = as_kernel_batch(w, name="kernel")
    if not single:
        raise ValueError(f"`kernel` {name!r} must be one 4-D kernel (c_out, c_in, kh, kw), got "
                         f"shape {arr.shape}")
    kernel = arr[0]
    geometry.check_kernel(kernel.shape)
    started = time.perf_counter()
    res = conv_operator_norm(kernel, geometry, rtol=rtol)
    hat = float(reshaped_kernel_norm(kernel))
    alpha = coverage_alpha(geometry, kernel.shape[2:])
    return {"layer": name, "kernel_shape": list(kernel.shape), "geometry": _geometry_json(geometry),
            "reshaped_norm": hat, "reshaped_norm_transposed":
                float(reshaped_kernel_norm_transposed(kernel)),
            "operator_norm": float(res.value), "operator_lower": float(res.lower),
            "operator_upper": float(res.upper), "operator_exact": bool(res.exact),
            "operator_method": res.method, "operator_note": res.note,
            "ratio": float(res.value) / hat, "alpha": alpha.alpha,
            "lower_bound_applies": bool(alpha.lower_bound_applies),
            "wall_s": time.perf_counter() - started}


def _geometry_json(g: ConvGeometry) -> dict:
    return {"input_size": list(g.input_size), "stride": list(g.stride),
            "padding": list(g.padding), "padding_mode": g.padding_mode,
            "dilation": list(g.dilation), "groups": g.groups}


def _module_rows(model, input_shape, rtol: float) -> list[dict]:
    import torch

    sizes: dict[str, tuple[int, int]] = {}
    hooks = []
    convs = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    if not convs:
        raise ValueError("the saved model has no torch.nn.Conv2d layer")
    for name, module in convs.items():
        hooks.append(module.register_forward_hook(
            lambda mod, inp, out, name=name: sizes.__setitem__(name, tuple(inp[0].shape[-2:]))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows = []
    for name, module in convs.items():
        if name not in sizes:
            raise ValueError(f"layer {name!r} was not reached by a forward pass of shape "
                             f"{tuple(input_shape)}")
        started = time.perf_counter()
        info = layer_norms(module, sizes[name], rtol=rtol)
        rows.append({"layer": name, "kernel_shape": list(module.weight.shape),
                     "geometry": _geometry_json(info["geometry"]),
                     "reshaped_norm": info["reshaped_norm"],
                     "reshaped_norm_transposed": info["reshaped_norm_transposed"],
                     "operator_norm": float(info["operator_norm"]),
                     "operator_lower": float(info["operator_lower"]),
                     "operator_upper": float(info["operator_upper"]),
                     "operator_exact": bool(info["operator_exact"]),
                     "operator_method": info["operator_method"],
                     "operator_note": info["operator_note"],
                     "ratio": float(info["ratio"]), "alpha": info["alpha"],
                     "lower_bound_applies": bool(info["lower_bound_applies"]),
                     "wall_s": time.perf_counter() - started})
    return rows


def inspect_path(path, *, geometry: ConvGeometry | None = None, input_shape=None,
                 rtol: float = 1e-6) -> list[dict]:
    """Rows for a ``.npy`` kernel, a ``.pt`` tensor / state_dict / whole model (see module doc)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"`path` {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            kernel = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"`path` {str(path)!r} is not a readable .npy array: {error}") from None
        return [inspect_kernel(path.stem, kernel, _need(geometry, path), rtol)]
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"`path` {str(path)!r} must end in .npy, .pt or .pth")
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files; report, don't hide
        raise ValueError(f"`path` {str(path)!r} could not be loaded by torch.load: "
                         f"{type(error).__name__}: {error}") from error
    if isinstance(obj, torch.nn.Module):
        if input_shape is None:
            raise ValueError("a saved model needs `--input-shape CxHxW` (e.g. 3x32x32) to find "
                             "each conv layer's input size")
        return _module_rows(obj, input_shape, rtol)
    if isinstance(obj, torch.Tensor):
        return [inspect_kernel(path.stem, obj, _need(geometry, path), rtol)]
    if isinstance(obj, dict):
        kernels = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) and v.ndim == 4}
        if not kernels:
            raise ValueError(f"`path` {str(path)!r} holds a dict without any 4-D tensor")
        g = _need(geometry, path)
        return [inspect_kernel(k, v, g, rtol) for k, v in kernels.items()]
    raise ValueError(f"`path` {str(path)!r} holds a {type(obj).__name__}; expected a kernel "
                     f"tensor, a state_dict or a torch.nn.Module")


def _need(geometry: ConvGeometry | None, path: Path) -> ConvGeometry:
    if geometry is None:
        raise ValueError(f"{path.name}: a bare kernel needs its layer geometry: pass "
                         f"`--input-size HxW` (and --stride/--padding/--padding-mode as needed)")
    return geometry


def format_convnorm_table(rows: list[dict]) -> str:
    header = (f"{'layer':<22} {'kernel':<16} {'input':>7} {'s':>3} {'pad':>5} {'mode':<8} "
              f"{'||w^||':>9} {'||w^T||':>9} {'||w~|| [certified interval]':<36} {'ratio':>7} "
              f"{'alpha':>6} {'exact':<5} {'time s':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        g = r["geometry"]
        interval = (f"{r['operator_norm']:.7g} [{r['operator_lower']:.7g}, "
                    f"{r['operator_upper']:.7g}]")
        lines.append(
            f"{r['layer'][:22]:<22} {'x'.join(map(str, r['kernel_shape'])):<16} "
            f"{'x'.join(map(str, g['input_size'])):>7} {g['stride'][0]:>3} "
            f"{','.join(map(str, g['padding'])):>5} {g['padding_mode']:<8} "
            f"{r['reshaped_norm']:>9.5g} {r['reshaped_norm_transposed']:>9.5g} {interval:<36} "
            f"{r['ratio']:>7.4f} {r['alpha']:>6.3g} {str(r['operator_exact']):<5} "
            f"{r['wall_s']:>7.2f}")
    notes = sorted({r["operator_note"] for r in rows if not r["operator_exact"] and r["operator_note"]})
    if notes:
        lines += ["", "notes:"] + [f"  {n}" for n in notes]
    lines += ["", "ratio = ||w~|| / ||w^|| (operator norm over torch's reshaped-kernel norm); "
                  "theory: 1 <= ratio <= alpha where the lower bound applies"]
    return "\n".join(lines)
