"""sntheory.lab.probes and sntheory.lab.hessian against slow exact references (float64, fixed seeds).

References: a per-sample loop of autograd; autograd of the batch loss through the normalizer on the
module itself; the dense expanded matrix of every conv layer (an equivalent dense network, whose
gradients w.r.t. the expanded matrices autograd computes); dense SVDs; dense Hessians.
"""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from sntheory.conv import coverage_alpha
from sntheory.conv.dense import dense_operator_norm, expanded_matrix
from sntheory.lab import probes as P
from sntheory.lab.hessian import (block_lanczos, dense_block_norm, dense_hessian,
                                  hessian_spectral_norm, sigmoid_second_derivative_sup)
from sntheory.lab.nets import NetConfig, build_discriminator

TINY = dict(arch="dcgan", image_size=8, width=4, depth=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batches(seed, n=5, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g) * 0.7 + 0.2


def _layer(recs, t, batch="real"):
    return next(r for r in recs if r["scope"] == "layer" and r["layer"] == t
                and r["batch"] == batch)


def _work(disc):
    return P._float64_copy(disc)


# ---------------------------------------------------------------------------------------------
# gradients against autograd


@pytest.mark.parametrize("normalizer,bias,loss,per_sample", [
    ("none", True, "wgan", "gram"), ("snw", True, "hinge", "vmap"), ("bsn", False, "ns", "gram"),
    ("snconv", True, "ns", "gram"), ("ssn", False, "hinge", "vmap")])
def test_gradients_match_autograd(normalizer, bias, loss, per_sample):
    cfg = NetConfig(**TINY, bias=bias)
    kw = {"scale": 1.7} if normalizer == "ssn" else {}
    disc = build_discriminator(cfg, normalizer, seed=3, normalizer_kwargs=kw)
    real, fake = _batches(4)
    recs = P.probe_discriminator(disc, real, fake, step=7, loss=loss,
                                 options=P.ProbeOptions(per_sample=per_sample))
    work = _work(disc)
    ws = [w.detach() for w in work.effective_weights()]
    bs = [None if b is None else b.detach() for b in work.biases()]
    for batch, x in (("real", real.double()), ("fake", fake.double())):
        # per sample: a loop of autograd on the functional forward
        per = [[], [], []]
        for j in range(x.shape[0]):
            wr = [w.clone().requires_grad_(True) for w in ws]
            br = [None if b is None else b.clone().requires_grad_(True) for b in bs]
            z = work.functional_forward(x[j:j + 1], wr, br)
            need = wr + [b for b in br if b is not None]
            grads = torch.autograd.grad(z.sum(), need)
            for t in range(3):
                per[t].append(float(grads[t].norm()))
        # the batch loss through the normalizer: autograd on the parametrized module itself
        mod = _work(disc)
        for p in mod.parameters():
            p.requires_grad_(True)
        z = mod(x)
        batch_loss = P.per_sample_loss(z, batch, loss).mean()
        raw_grads = torch.autograd.grad(batch_loss, mod.raw_weights(), retain_graph=True)
        effs = [layer.weight for layer in mod.layers]
        z2 = mod.functional_forward(x, effs, mod.biases())
        eff_grads = torch.autograd.grad(P.per_sample_loss(z2, batch, loss).mean(), effs)
        for t in range(3):
            r = _layer(recs, t, batch)
            assert r["grad_eff_fro_max"] == pytest.approx(max(per[t]), rel=1e-12)
            assert r["grad_eff_fro_mean"] == pytest.approx(np.mean(per[t]), rel=1e-12)
            assert r["loss_grad_eff_fro"] == pytest.approx(float(eff_grads[t].norm()), rel=1e-11,
                                                           abs=1e-300)
            assert r["raw_grad_fro"] == pytest.approx(float(raw_grads[t].norm()), rel=1e-11,
                                                      abs=1e-300)
            if bias:
                gb = torch.autograd.grad(P.per_sample_loss(mod(x), batch, loss).mean(),
                                         mod.layers[t].bias)[0]
                assert r["loss_grad_bias_fro"] == pytest.approx(float(gb.norm()), rel=1e-11,
                                                                abs=1e-300)


def _expanded_forward(work, x, mats, biases_full):
    """The same network with every conv replaced by its dense expanded matrix."""
    h = x.reshape(x.shape[0], -1)
    last = len(mats) - 1
    for i, (m, b) in enumerate(zip(mats, biases_full)):
        h = h @ m.T + (0 if b is None else b)
        if i < last:
            h = work.activation(h)
    return h.reshape(-1)


def test_expanded_matrix_gradients_and_bias_broadcast():
    """grad_z_expanded (||delta|| ||o||) and the loss's expanded gradient equal autograd on the
    dense expanded network; the broadcast bias norm equals ||b~|| of the expanded bias."""
    cfg = NetConfig(**TINY, bias=True, activation="leaky_relu:0.2")
    disc = build_discriminator(cfg, "snw", seed=11)
    real, fake = _batches(12)
    recs = P.probe_discriminator(disc, real, fake, step=0, loss="hinge")
    work = _work(disc)
    mats, bfull = [], []
    for info, w, b in zip(work.layer_info, work.effective_weights(), work.biases()):
        if info.kind == "conv":
            mats.append(torch.from_numpy(expanded_matrix(w.detach().numpy(), info.geometry)))
            pos = math.prod(info.output_shape[1:])
            bfull.append(b.detach().repeat_interleave(pos))
        else:
            mats.append(w.detach().clone())
            bfull.append(b.detach().clone())
    x = real.double()
    z_ref = work(x)
    mats_req = [m.clone().requires_grad_(True) for m in mats]
    z = _expanded_forward(work, x, mats_req, bfull)
    assert torch.allclose(z, z_ref, rtol=1e-12, atol=1e-12)
    per = []
    for j in range(x.shape[0]):
        g = torch.autograd.grad(z[j], mats_req, retain_graph=True)
        per.append([float(gi.norm()) for gi in g])
    loss_g = torch.autograd.grad(P.per_sample_loss(z, "real", "hinge").mean(), mats_req)
    for t in range(3):
        r = _layer(recs, t, "real")
        assert r["grad_z_expanded_at_worst"] == pytest.approx(
            per[r["grad_z_expanded_worst_sample"]][t], rel=1e-11)
        assert r["loss_grad_expanded_fro"] == pytest.approx(float(loss_g[t].norm()), rel=1e-10)
        assert r["bias_norm"] == pytest.approx(float(bfull[t].norm()), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# operator norms, reshaped norms, variances


def test_operator_norms_match_dense_svd_and_warm_start_agrees():
    """16x16 inputs, width 8: both conv layers take the warm-started Lanczos path (their
    expanded matrices exceed the dense limit); values against the dense SVD."""
    cfg = NetConfig(arch="dcgan", image_size=16, width=8, depth=2)
    disc = build_discriminator(cfg, "none", seed=5)
    real, fake = _batches(1, n=3, shape=(1, 16, 16))
    cache = P.OperatorNormCache()
    first = P.probe_discriminator(disc, real, fake, step=0, cache=cache)
    assert len(cache) == 2                                # the two conv layers
    with torch.no_grad():                                 # move the weights a little
        for layer in disc.layers:
            layer.weight.mul_(1.01).add_(0.01 * torch.randn_like(layer.weight))
    second = P.probe_discriminator(disc, real, fake, step=1, cache=cache)
    reference = P.probe_discriminator(disc, real, fake, step=1,
                                      options=P.ProbeOptions(operator_norms="reference"))
    work = _work(disc)
    for t, (info, w) in enumerate(zip(work.layer_info, work.effective_weights())):
        w = w.detach().numpy()
        if info.kind == "conv":
            exact = dense_operator_norm(w, info.geometry)
            assert "lanczos-warm" in _layer(second, t)["op_norm_method"]
            assert "lanczos-cold" in _layer(first, t)["op_norm_method"]
        else:
            exact = float(np.linalg.norm(w, 2))
        for recs in (second, reference):
            r = _layer(recs, t)
            assert r["op_norm_lower"] <= exact * (1 + 1e-12)
            assert exact <= r["op_norm_upper"] * (1 + 1e-12)
            assert r["op_norm_exact"] == pytest.approx(exact, rel=1e-6)
            assert r["op_norm_converged"]


def test_small_layers_use_the_dense_certified_norm():
    disc = build_discriminator(NetConfig(**TINY), "none", seed=6)
    recs = P.probe_discriminator(disc, *_batches(6), step=0)
    work = _work(disc)
    for t, info in enumerate(work.layer_info[:2]):
        r = _layer(recs, t)
        assert r["op_norm_method"] == "conv_operator_norm-dense"
        exact = dense_operator_norm(work.effective_weights()[t].detach().numpy(), info.geometry)
        assert r["op_norm_lower"] <= exact <= r["op_norm_upper"] <= exact * (1 + 1e-10)


def test_reshaped_norms_alpha_and_variances():
    cfg = NetConfig(**TINY)
    disc = build_discriminator(cfg, "snw", seed=2)
    real, fake = _batches(2)
    recs = P.probe_discriminator(disc, real, fake, step=3)
    work = _work(disc)
    for t, (info, w, raw) in enumerate(zip(work.layer_info, work.effective_weights(),
                                           work.raw_weights())):
        r = _layer(recs, t)
        w, raw = w.detach().numpy(), raw.detach().numpy()
        mat = w.reshape(w.shape[0], -1)
        assert r["reshaped_norm"] == pytest.approx(np.linalg.norm(mat, 2), rel=1e-12)
        if info.kind == "conv":
            mat_t = np.swapaxes(w, 0, 1).reshape(w.shape[1], -1)
            assert r["reshaped_norm_transposed"] == pytest.approx(np.linalg.norm(mat_t, 2),
                                                                  rel=1e-12)
            assert r["alpha"] == 2.0                       # 4x4 stride 2
            assert r["ratio_op_to_reshaped"] <= r["alpha"] * (1 + 1e-9)
            if coverage_alpha(info.geometry, w.shape[-2:]).lower_bound_applies:
                assert r["ratio_op_to_reshaped"] >= 1 - 1e-9
        assert r["eff_weight_var"] == pytest.approx(np.var(w), rel=1e-12)
        assert r["raw_weight_var"] == pytest.approx(np.var(raw), rel=1e-12)
        assert r["t2_var_bound"] == pytest.approx(1 / max(mat.shape))
        assert r["eff_weight_mean_sq"] <= r["mean_sq_bound_reshaped"] * (1 + 1e-12)
        # SNw: the reshaped norm of the effective weight is 1 up to the power-iteration lag
        assert r["reshaped_norm"] == pytest.approx(1.0, rel=0.2)


def test_upper_only_mode_keeps_certified_bounds():
    cfg = NetConfig(arch="dcgan", image_size=16, width=8, depth=2)
    disc = build_discriminator(cfg, "bsn", seed=8)
    real, fake = _batches(8, n=3, shape=(1, 16, 16))
    recs = P.probe_discriminator(disc, real, fake, step=0,
                                 options=P.ProbeOptions(operator_values=False))
    work = _work(disc)
    for t, info in enumerate(work.layer_info):
        r = _layer(recs, t)
        if info.kind == "conv":
            assert "op_norm_exact" not in r and "upper only" in r["op_norm_method"]
            exact = dense_operator_norm(work.effective_weights()[t].detach().numpy(),
                                        info.geometry)
            assert r["op_norm_lower"] <= exact <= r["op_norm_upper"]


# ---------------------------------------------------------------------------------------------
# records: determinism, JSON, the discriminator left untouched


def test_records_are_deterministic_json_and_leave_the_discriminator_alone():
    disc = build_discriminator(NetConfig(**TINY), "snw", seed=1)
    disc.train()
    before = copy.deepcopy(disc.state_dict())
    real, fake = _batches(3)
    c1, c2 = P.OperatorNormCache(), P.OperatorNormCache()
    a = P.probe_discriminator(disc, real, fake, step=5, cache=c1)
    b = P.probe_discriminator(disc, real, fake, step=5, cache=c2)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    for r in a:
        for k, v in r.items():
            assert isinstance(v, (bool, int, float, str)), (k, type(v))
            assert not (isinstance(v, float) and not math.isfinite(v)), k
    assert disc.training
    after = disc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a resumed run: the cache restored from its state dict gives the same next records
    restored = P.OperatorNormCache()
    restored.load_state_dict(c1.state_dict())
    n1 = P.probe_discriminator(disc, real, fake, step=6, cache=c1)
    n2 = P.probe_discriminator(disc, real, fake, step=6, cache=restored)
    assert json.dumps(n1, sort_keys=True) == json.dumps(n2, sort_keys=True)
    kinds = [r["scope"] for r in a]
    assert kinds.count("layer") == 6 and kinds.count("network") == 2


# ---------------------------------------------------------------------------------------------
# bounds: hold on random nets, tight on an aligned net, fail without the hypotheses


@pytest.mark.parametrize("normalizer", ["none", "snw", "snconv", "bsn", "frobenius"])
@pytest.mark.parametrize("bias", [False, True])
def test_p1_bounds_hold_on_random_nets(normalizer, bias):
    disc = build_discriminator(NetConfig(**TINY, bias=bias), normalizer, seed=21)
    real, fake = _batches(22)
    recs = P.probe_discriminator(disc, real * 3, fake, step=0, loss="ns")
    for r in recs:
        for k, v in r.items():
            if k.endswith("_ratio_max") and "sheet" not in k and not k.startswith("sn_"):
                assert v <= 1 + 1e-9, (normalizer, bias, r["layer"], k, v)
        if r["scope"] == "layer":
            assert r["forward_factor_ratio_max"] <= 1 + 1e-9
            assert r["loss_grad_eff_fro"] <= r["loss_grad_eff_bound"] * (1 + 1e-9)
            assert r["raw_grad_fro"] <= r["raw_grad_bound"] * (1 + 1e-9)
            assert r["bound_form"] == ("bias recursion" if bias else "paper (bias-free)")


def aligned_mlp(activation: str, *, n_in: int = 16, width: int = 5, seed: int = 0):
    """An MLP whose P1 bound is attained: rank-one weights chained along positive singular
    vectors, positive inputs along the first one (then every ReLU passes everything)."""
    cfg = NetConfig(arch="mlp", image_size=4, channels=1, width=width, depth=2,
                    activation=activation, bias=False)
    disc = build_discriminator(cfg, "none", seed=seed)
    g = torch.Generator().manual_seed(seed)
    v0 = torch.rand(n_in, generator=g) + 0.1
    u1 = torch.rand(width, generator=g) + 0.1
    u2 = torch.rand(width, generator=g) + 0.1
    v0, u1, u2 = (v / v.norm() for v in (v0, u1, u2))
    s = (1.7, 0.6, 2.3)
    with torch.no_grad():
        disc.layers[0].weight.copy_(s[0] * torch.outer(u1, v0))
        disc.layers[1].weight.copy_(s[1] * torch.outer(u2, u1))
        disc.layers[2].weight.copy_(s[2] * u2[None, :])
    scales = torch.tensor([0.5, 1.0, 2.5, 4.0])
    x = (scales[:, None] * v0[None, :]).reshape(4, 1, 4, 4)
    return disc, x


def test_aligned_net_attains_the_bound_and_a_lipschitz_excess_breaks_it():
    disc, x = aligned_mlp("relu")
    recs = P.probe_discriminator(disc, x, x, step=0)
    for r in recs:
        if r["scope"] == "layer":
            assert r["grad_z_expanded_ratio_max"] == pytest.approx(1.0, abs=1e-13)
            assert r["grad_z_expanded_ratio_max"] <= 1 + 1e-12
    disc2, x2 = aligned_mlp("scaled_relu:1.000001")
    recs2 = P.probe_discriminator(disc2, x2, x2, step=0)
    for r in recs2:
        if r["scope"] == "layer":
            # every layer's gradient passes L - 1 = 2 activations: ratio c^2
            assert r["grad_z_expanded_ratio_max"] == pytest.approx(1.000001 ** 2, rel=1e-12)
            assert not r["meets_p1_hypotheses"]


def test_raw_bound_corrected_holds_and_sheet_form_fails():
    """The sheet's (s/sigma)||G|| is exceeded on random SNw conv layers; the corrected bound
    |c| max(1, ||W|| ||grad log c||) ||G|| never is, and the factor is sqrt(stable rank) for the
    exact spectral norm."""
    disc = build_discriminator(NetConfig(**TINY), "snw", seed=4)
    real, fake = _batches(5, n=8)
    recs = P.probe_discriminator(disc, real, fake, step=0)
    layers = [r for r in recs if r["scope"] == "layer"]
    assert max(r["raw_grad_z_sheet_ratio_max"] for r in layers) > 1 + 1e-3
    assert all(r["raw_grad_z_ratio_max"] <= 1 + 1e-12 for r in layers)
    # projection norm = ||W||_F ||u v^T||_F / sigma = sqrt(stable rank) when sigma = ||W||_sp
    w = torch.randn(6, 10, dtype=torch.float64)
    lin = torch.nn.Linear(10, 6, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    from sntheory.normalizers import snw
    snw(lin, n_power_iterations=200)
    lin.train()
    lin(torch.zeros(1, 10, dtype=torch.float64))       # converge u, v
    lin.eval()
    f = P._raw_factors(lin)
    sr = float(w.norm() ** 2 / torch.linalg.matrix_norm(w, 2) ** 2)
    proj = max(1.0, float(f["raw"].norm() * f["dlogc"].norm()))
    assert proj == pytest.approx(math.sqrt(sr), rel=1e-8)


# ---------------------------------------------------------------------------------------------
# Hessians


def _lanczos_matrix(eigs, seed=0):
    g = np.random.default_rng(seed)
    q, _ = np.linalg.qr(g.standard_normal((len(eigs), len(eigs))))
    return torch.from_numpy((q * np.asarray(eigs)) @ q.T)


def test_block_lanczos_on_known_spectra():
    n = 60
    eigs = np.linspace(-1, 1, n)
    eigs[-1], eigs[-2] = 3.0, 3.0 - 1e-7                 # a near-degenerate top pair
    eigs[0] = -3.5                                       # the largest magnitude is negative
    a = _lanczos_matrix(eigs)
    res = block_lanczos(lambda v: v @ a, n, target="magnitude", rtol=1e-12)
    assert res.value == pytest.approx(-3.5, rel=1e-12)
    res = block_lanczos(lambda v: v @ a, n, target="largest", rtol=1e-12)
    assert res.value == pytest.approx(3.0, rel=1e-12)
    assert res.theta_max <= 3.0 + 1e-12                 # interlacing: from below
    warm = block_lanczos(lambda v: v @ a, n, target="largest", rtol=1e-12,
                         start=res.top_vectors + 1e-3 * torch.randn(2, n, dtype=torch.float64))
    assert warm.value == pytest.approx(3.0, rel=1e-12)
    assert warm.iterations < res.iterations
    with pytest.raises(ValueError, match="target"):
        block_lanczos(lambda v: v @ a, n, target="smallest")
    with pytest.raises(ValueError, match="rank 0"):
        block_lanczos(lambda v: v @ a, n, start=torch.zeros(2, n, dtype=torch.float64))


@pytest.mark.parametrize("arch,activation", [("mlp", "leaky_relu:0.1"), ("mlp", "tanh"),
                                             ("dcgan", "relu"), ("dcgan", "softplus")])
def test_hessian_lanczos_matches_dense(arch, activation):
    cfg = NetConfig(arch=arch, image_size=8, channels=1, width=3, depth=2,
                    activation=activation)
    disc = build_discriminator(cfg, "none", seed=7)
    work = _work(disc)
    x = _batches(7, n=6)[0].double()
    ws = [w.detach() for w in work.effective_weights()]
    bs = [b.detach() for b in work.biases()]

    def f(p):
        return torch.sigmoid(work.functional_forward(x, p, bs)).mean()

    for rows, cols in (([0], [0]), ([1], [1]), ([2], [2]), ([0], [1]), ([1], [2]),
                       ([0, 1, 2], [0, 1, 2])):
        res = hessian_spectral_norm(f, ws, rows=rows, cols=cols)
        ref = dense_block_norm(dense_hessian(f, ws, rows=rows, cols=cols))
        assert res.converged
        assert res.value == pytest.approx(ref, rel=1e-6), (rows, cols)
        assert res.value <= ref * (1 + 1e-12)            # Ritz values never exceed the norm


def test_probe_hessians_match_dense_and_the_gauss_newton_form():
    cfg = NetConfig(**TINY, activation="leaky_relu:0.2")
    disc = build_discriminator(cfg, "snw", seed=9)
    real, fake = _batches(9, n=4)
    recs = P.probe_discriminator(disc, real, fake, step=0, loss="ns",
                                 options=P.ProbeOptions(hessian=True, hessian_cross_layer=True))
    work = _work(disc)
    ws = [w.detach() for w in work.effective_weights()]
    bs = [b.detach() for b in work.biases()]
    x = real.double()

    def f(p):
        return torch.sigmoid(work.functional_forward(x, p, bs)).mean()

    for t in range(3):
        r = _layer(recs, t)
        ref = dense_block_norm(dense_hessian(f, ws, rows=[t]))
        assert r["hessian_norm"] == pytest.approx(ref, rel=1e-6)
        assert r["hessian_gauss_newton_norm"] == pytest.approx(ref, rel=1e-6)
        assert r["hessian_norm"] <= r["hessian_bound_curvature"] * (1 + 1e-9)
        assert r["hessian_bound_curvature"] <= r["hessian_bound"] * (1 + 1e-9)
        assert r["sigmoid_second_derivative_sup"] == pytest.approx(0.0962250448649376)
    cross = [r for r in recs if r["scope"] == "hessian-cross" and r["batch"] == "real"]
    assert {(r["layer"], r["layer_other"]) for r in cross} == {(0, 1), (0, 2), (1, 2)}
    for r in cross:
        ref = dense_block_norm(dense_hessian(f, ws, rows=[r["layer"]], cols=[r["layer_other"]]))
        assert r["hessian_cross_norm"] == pytest.approx(ref, rel=1e-6)
    assert sigmoid_second_derivative_sup() == pytest.approx(
        max(abs(s * (1 - s) * (1 - 2 * s)) for s in 1 / (1 + np.exp(-np.linspace(-5, 5,
                                                                                  200001)))),
        rel=1e-8)


# ---------------------------------------------------------------------------------------------
# bad input


def test_bad_input_is_rejected_with_clear_errors():
    disc = build_discriminator(NetConfig(**TINY), "none", seed=0)
    real, fake = _batches(0)
    with pytest.raises(ValueError, match="`real` must have shape"):
        P.probe_discriminator(disc, real[:, :, :4], fake, step=0)
    bad = fake.clone()
    bad[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"`fake` must be finite, but fake\[1, 0, 2, 3\]"):
        P.probe_discriminator(disc, real, bad, step=0)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        P.probe_discriminator(disc, real, fake, step=0, loss="lsgan")
    with pytest.raises(ValueError, match="`step` must be an integer >= 0"):
        P.probe_discriminator(disc, real, fake, step=-1)
    with pytest.raises(TypeError, match="`disc` must be"):
        P.probe_discriminator(torch.nn.Linear(2, 1), real, fake, step=0)
    with pytest.raises(TypeError, match="`real` must be a torch.Tensor"):
        P.probe_discriminator(disc, real.numpy(), fake, step=0)
    with pytest.raises(ValueError, match="`operator_norms` must be one of"):
        P.ProbeOptions(operator_norms="fast")
    with pytest.raises(ValueError, match="`hessian_cross_layer`=True needs `hessian`=True"):
        P.ProbeOptions(hessian_cross_layer=True)
    with pytest.raises(ValueError, match="`operator_rtol`"):
        P.ProbeOptions(operator_rtol=0.0)
    with pytest.raises(TypeError, match="`cache` must be an OperatorNormCache"):
        P.probe_discriminator(disc, real, fake, step=0, cache={})
    with pytest.raises(ValueError, match="not a \\(b, n\\) tensor"):
        P.OperatorNormCache().load_state_dict({"k": torch.zeros(3)})
    with pytest.raises(ValueError, match="`rows`"):
        hessian_spectral_norm(lambda p: (p[0] ** 3).sum(), [torch.ones(3)], rows=[1])
    with pytest.raises(ValueError, match="equal .* or disjoint"):
        hessian_spectral_norm(lambda p: (p[0] * p[1]).sum(), [torch.ones(3), torch.ones(3)],
                              rows=[0, 1], cols=[1])


def test_a_normalizer_that_zeroes_the_weight_gives_finite_records():
    """W_eff = 0 * W (c = 0): the per-sample raw-gradient form divides by c, so it is left out;
    every record stays finite (the trainer rejects NaN records)."""
    from torch import nn
    from torch.nn.utils import parametrize

    class _Zero(nn.Module):
        def forward(self, w):
            return 0.0 * w

    disc = build_discriminator(NetConfig(**TINY), "none", seed=1)
    parametrize.register_parametrization(disc.layers[0], "weight", _Zero())
    real, fake = _batches(3)
    records = P.probe_discriminator(disc, real, fake, step=1)
    for r in records:
        for k, v in r.items():
            assert not (isinstance(v, float) and not math.isfinite(v)), (r["layer"], k)
    first = [r for r in records if r["scope"] == "layer" and r["layer"] == 0]
    others = [r for r in records if r["scope"] == "layer" and r["layer"] == 1]
    assert len(first) == 2 and len(others) == 2
    assert all("raw_grad_z_ratio_max" not in r for r in first)
    assert all("raw_grad_z_ratio_max" in r for r in others)
