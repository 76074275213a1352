"""Discriminator.functional_forward honours every padding mode of its conv layers."""
import pytest
import torch
from torch import nn

from sntheory.lab.nets import Discriminator


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_functional_forward_matches_modules_for_padding_mode(mode):
    torch.manual_seed(0)
    d = Discriminator([nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, dtype=torch.float64),
                       nn.Conv2d(3, 4, 4, stride=2, padding=1, padding_mode=mode,
                                 dtype=torch.float64),
                       nn.Linear(4 * 4 * 4, 1, dtype=torch.float64)], "leaky_relu:0.1", (2, 8, 8))
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    h = x
    for i, layer in enumerate(d.layers):
        h = layer(h if isinstance(layer, nn.Conv2d) else h.flatten(1))
        if i < 2:
            h = torch.nn.functional.leaky_relu(h, 0.1)
    with torch.no_grad():
        torch.testing.assert_close(d(x), h.squeeze(1).detach(), rtol=1e-14, atol=1e-14)


def test_unsupported_padding_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="padding_mode 'reflect'.*not supported"):
        Discriminator([nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
                       nn.Linear(3 * 8 * 8, 1)], "relu", (2, 8, 8))


def test_input_too_small_names_the_layer():
    with pytest.raises(ValueError, match=r"layer 1 \(conv4x4/s2\) cannot take an input of shape "
                                         r"\(2, 1, 1\)"):
        Discriminator([nn.Conv2d(1, 2, 4, stride=2), nn.Conv2d(2, 2, 4, stride=2),
                       nn.Linear(2, 1)], "relu", (1, 4, 4))
