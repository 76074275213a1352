"""Tests of sntheory.lab.nets: architectures, shapes, the functional forward pass, activation facts
and configuration errors.

References: the layer plans written out in THEORY.md ("What the paper measured") and the module
docstring; a plain layer-by-layer forward through the modules' own ``__call__`` (independent of
``functional_forward``); finite-difference / grid checks of the activation facts.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sntheory.lab.nets import (Discriminator, NetConfig, build_discriminator, build_generator,
                               parse_activation)
from sntheory.normalizers import NORMALIZERS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


KWARGS = {"ssn": {"scale": 1.7}, "bssn": {"scale": 0.8}, "diff-gamma": {"gamma": 1.3}}
SMALL = {
    "dcgan": NetConfig(arch="dcgan", image_size=8, channels=1, width=4, depth=2, latent_dim=6),
    "cifar-cnn": NetConfig(arch="cifar-cnn", image_size=8, channels=3, width=2, latent_dim=6,
                           gen_width=2),
    "mlp": NetConfig(arch="mlp", image_size=4, channels=1, width=5, depth=2, latent_dim=6),
}


def reference_forward(disc: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """``z`` through the modules' own ``__call__``: conv/linear, activation, flatten before dense."""
    h = x
    for i, layer in enumerate(disc.layers):
        h = layer(h if isinstance(layer, nn.Conv2d) else h.flatten(1))
        if i < len(disc.layers) - 1:
            h = disc.activation(h)
    return h.reshape(-1)


# ---- architectures and shapes -------------------------------------------------------------------

def test_cifar_cnn_is_the_papers_discriminator():
    cfg = NetConfig(arch="cifar-cnn", image_size=32, channels=3, width=64)
    disc = build_discriminator(cfg, seed=0)
    assert [i.label for i in disc.layer_info] == [
        "conv3x3/s1 64", "conv4x4/s2 64", "conv3x3/s1 128", "conv4x4/s2 128", "conv3x3/s1 256",
        "conv4x4/s2 256", "conv3x3/s1 512", "dense 1"]
    sizes = [i.output_shape for i in disc.layer_info]
    assert sizes == [(64, 32, 32), (64, 16, 16), (128, 16, 16), (128, 8, 8), (256, 8, 8),
                     (256, 4, 4), (512, 4, 4), (1,)]
    assert disc.activation.name == "leaky_relu:0.1"
    convs = [i for i in disc.layer_info if i.kind == "conv"]
    assert all(i.geometry.padding == (1, 1) for i in convs)  # 'same' zero padding
    assert disc.layer_info[-1].input_shape == (512 * 4 * 4,)


def test_dcgan_plan_halves_the_size_and_doubles_the_width():
    cfg = NetConfig(arch="dcgan", image_size=16, channels=1, width=8, depth=3)
    disc = build_discriminator(cfg, seed=0)
    assert [i.output_shape for i in disc.layer_info] == [(8, 8, 8), (16, 4, 4), (32, 2, 2), (1,)]
    assert [i.geometry.input_size for i in disc.layer_info[:3]] == [(16, 16), (8, 8), (4, 4)]


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_layer_info_matches_the_real_activations(arch):
    cfg = SMALL[arch]
    disc = build_discriminator(cfg, seed=1)
    x = torch.randn(3, *cfg.input_shape, generator=torch.Generator().manual_seed(0))
    inputs = disc.layer_inputs(x)
    for info, h in zip(disc.layer_info, inputs):
        expected = info.input_shape
        got = tuple(h.shape[1:]) if info.kind == "conv" else (h[0].numel(),)
        assert got == expected, info
    assert disc(x).shape == (3,)
    gen = build_generator(cfg, seed=1)
    images = gen(torch.randn(5, cfg.latent_dim))
    assert images.shape == (5, *cfg.input_shape)
    assert images.abs().max() <= 1.0  # tanh output


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
@pytest.mark.parametrize("arch", ["dcgan", "cifar-cnn"])
def test_functional_forward_equals_the_module_forward_in_eval_mode(arch, name):
    cfg = SMALL[arch]
    disc = build_discriminator(cfg, name, normalizer_kwargs=KWARGS.get(name), seed=2).double()
    disc.eval()
    x = torch.randn(4, *cfg.input_shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = reference_forward(disc, x)
        z = disc.functional_forward(x, disc.effective_weights(), disc.biases())
        z_module = disc(x)
        single = disc.functional_forward(x[1], disc.effective_weights(), disc.biases())
        vmapped = torch.func.vmap(lambda s: disc.functional_forward(
            s, disc.effective_weights(), disc.biases()))(x)
    torch.testing.assert_close(z, ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(z_module, ref, rtol=1e-12, atol=1e-13)
    assert single.shape == ()
    torch.testing.assert_close(single, ref[1], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(vmapped, ref, rtol=1e-12, atol=1e-13)
    # eval mode: the effective weights are a fixed function of the state (no power step)
    before = [w.detach().clone() for w in disc.effective_weights()]
    disc(x)
    assert all(torch.equal(a, b) for a, b in zip(before, disc.effective_weights()))


def test_functional_forward_uses_the_weights_it_is_given():
    cfg = SMALL["dcgan"]
    disc = build_discriminator(cfg, seed=0).double()
    x = torch.randn(3, *cfg.input_shape, dtype=torch.float64)
    weights = list(disc.effective_weights())
    weights[-1] = torch.zeros_like(weights[-1])
    biases = list(disc.biases())
    biases[-1] = torch.tensor([0.25], dtype=torch.float64)
    z = disc.functional_forward(x, weights, biases)
    assert torch.equal(z, torch.full((3,), 0.25, dtype=torch.float64))
    z_relu = disc.functional_forward(x, disc.effective_weights(), disc.biases(), activation="relu")
    assert not torch.allclose(z_relu, disc(x))  # the activation override takes effect
    with pytest.raises(ValueError, match="one tensor per layer"):
        disc.functional_forward(x, weights[:-1])


def test_training_mode_steps_power_iteration_and_raw_weights_are_the_originals():
    cfg = SMALL["dcgan"]
    disc = build_discriminator(cfg, "snw", seed=0)
    raw = disc.raw_weights()
    assert all(r is layer.parametrizations.weight.original for r, layer in zip(raw, disc.layers))
    u = disc.layers[0].parametrizations.weight[0]._u.clone()
    disc.train()
    disc(torch.randn(2, *cfg.input_shape))
    assert not torch.equal(u, disc.layers[0].parametrizations.weight[0]._u)
    plain = build_discriminator(cfg, "none", seed=0)
    assert all(r is layer.weight for r, layer in zip(plain.raw_weights(), plain.layers))


def test_seed_fixes_the_weights_and_leaves_the_global_stream_alone():
    cfg = SMALL["dcgan"]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_discriminator(cfg, "snw", seed=7)
    g = build_generator(cfg, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the builds did not draw from it
    b = build_discriminator(cfg, "snw", seed=7)
    c = build_discriminator(cfg, "snw", seed=8)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not torch.equal(a.layers[0].parametrizations.weight.original,
                           c.layers[0].parametrizations.weight.original)
    g2 = build_generator(cfg, seed=7)
    assert all(torch.equal(p, q) for p, q in zip(g.parameters(), g2.parameters()))


def test_snconv_gets_the_true_input_sizes():
    cfg = SMALL["dcgan"]
    disc = build_discriminator(cfg, "snconv", seed=0)
    for info, layer in zip(disc.layer_info, disc.layers):
        if info.kind == "conv":
            p = layer.parametrizations.weight[0]
            assert tuple(p._v.shape[-2:]) == info.geometry.input_size


# ---- activations --------------------------------------------------------------------------------

GRID = torch.linspace(-3, 3, 601, dtype=torch.float64)


@pytest.mark.parametrize("text", ["relu", "leaky_relu:0.1", "leaky_relu", "scaled_relu:2",
                                  "tanh", "elu", "softplus", "gelu"])
def test_activation_facts_hold_on_a_grid(text):
    act = parse_activation(text)
    y = act(GRID)
    slopes = (y[1:] - y[:-1]).abs() / (GRID[1:] - GRID[:-1])
    assert slopes.max() <= act.lipschitz * (1 + 1e-9)
    assert (abs(float(act(torch.zeros(1, dtype=torch.float64)))) == 0.0) == act.zero_at_zero
    for c in (0.5, 3.0):
        homogeneous = torch.allclose(act(c * GRID), c * y, rtol=1e-12, atol=1e-14)
        assert homogeneous == act.homogeneous, (text, c)
    # second differences vanish (away from the kink at 0) exactly when piecewise linear
    curvature = (y[2:] - 2 * y[1:-1] + y[:-2]).abs()
    away = GRID[1:-1].abs() > 0.02
    assert (curvature[away].max() < 1e-12) == act.piecewise_linear


def test_activation_parameters_and_p1_hypotheses():
    assert parse_activation("leaky_relu").name == "leaky_relu:0.01"
    assert parse_activation("relu").meets_p1_hypotheses
    assert parse_activation("leaky_relu:0.2").meets_p1_hypotheses
    scaled = parse_activation("scaled_relu:2")
    assert scaled.lipschitz == 2.0 and not scaled.meets_p1_hypotheses
    assert not parse_activation("softplus").meets_p1_hypotheses  # softplus(0) = log 2
    assert math.isclose(float(parse_activation("softplus")(torch.zeros(1))), math.log(2),
                        rel_tol=1e-6)


# ---- configuration errors -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"arch": "resnet"}, ValueError, r"`arch` must be one of .*'resnet'"),
    ({"activation": "swish"}, ValueError, r"`activation` must be one of .*'swish'"),
    ({"activation": "scaled_relu"}, ValueError, r"needs its scale"),
    ({"activation": "leaky_relu:abc"}, ValueError, r"parameter must be a number"),
    ({"activation": 3}, TypeError, r"`activation` must be a string"),
    ({"width": "32"}, TypeError, r"`width` must be an integer"),
    ({"depth": 0}, ValueError, r"`depth` must be an integer >= 1"),
    ({"bias": "yes"}, TypeError, r"`bias` must be true or false"),
    ({"arch": "dcgan", "image_size": 4, "depth": 3}, ValueError,
     r"multiple of 2\*\*depth = 8 .* got 4"),
    ({"arch": "dcgan", "image_size": 12, "depth": 3}, ValueError, r"multiple of 2\*\*depth = 8"),
    ({"arch": "cifar-cnn", "image_size": 12}, ValueError, r"multiple of 8 .* got 12"),
    ({"arch": "cifar-cnn", "image_size": 4}, ValueError, r"multiple of 8"),
])
def test_config_errors_name_the_argument_and_the_rule(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        NetConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match=r"\[net\] has unknown keys \['widht'\]"):
        NetConfig.from_dict({"widht": 3})
    with pytest.raises(TypeError, match=r"\[net\] must be a table"):
        NetConfig.from_dict(["dcgan"])
    cfg = SMALL["cifar-cnn"]
    assert NetConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_normalizer_and_bad_builder_arguments():
    with pytest.raises(ValueError, match=r"`name` must be one of .*'spectral'"):
        build_discriminator(SMALL["dcgan"], "spectral")
    with pytest.raises(TypeError, match="must be a NetConfig"):
        build_discriminator({"arch": "dcgan"})
    with pytest.raises(TypeError, match="must be a NetConfig"):
        build_generator("dcgan")


def test_discriminator_checks_its_layers():
    with pytest.raises(ValueError, match="last layer must be nn.Linear"):
        Discriminator([nn.Linear(4, 2)], "relu", (4,))
    with pytest.raises(ValueError, match="conv layers must all come before"):
        Discriminator([nn.Linear(4, 4), nn.Conv2d(1, 1, 1), nn.Linear(4, 1)], "relu", (1, 2, 2))
    with pytest.raises(TypeError, match=r"`layers\[0\]` must be nn.Conv2d or nn.Linear"):
        Discriminator([nn.ReLU(), nn.Linear(4, 1)], "relu", (4,))
    # (raised by ConvGeometry: the message states the rule but not the layer index)
    with pytest.raises(ValueError, match="empty output: input height 3 .* kernel height 5"):
        Discriminator([nn.Conv2d(1, 2, 5), nn.Linear(2, 1)], "relu", (1, 3, 3))
    with pytest.raises(ValueError, match=r"layer 1 \(dense\) expects 7 inputs, gets 8"):
        Discriminator([nn.Conv2d(1, 2, 1), nn.Linear(7, 1)], "relu", (1, 2, 2))
