"""Normalizers of THEORY.md's table as ``torch.nn.utils.parametrize`` parametrizations.

One contract (:mod:`.base`), one module per normalizer. Each has a parametrization class, an
attach function ``f(module, name="weight", ...) -> module`` with torch's argument names, and a
pure exact function ``<name>_normalize(weight, ...)``:

=============  =====================================  ==================  =====================
name           effective weight                       attach              pure function
=============  =====================================  ==================  =====================
none           ``W``                                  identity            identity_normalize
snw            ``W / ||w^||_sp``                      snw                 snw_normalize
snconv         ``W / ||w~||_sp``                      snconv              snconv_normalize
ssn            ``s W / ||w^||_sp``                    ssn                 ssn_normalize
bsn            ``W / ((||w^|| + ||w^'||) / 2)``       bsn                 bsn_normalize
bssn           ``s`` times BSN                        bssn                bssn_normalize
same-gamma     ``gamma W / ||w^||_sp``, shared gamma  same_gamma (model)  gamma_normalize
diff-gamma     ``gamma W / ||w^||_sp``, per layer     diff_gamma          gamma_normalize
frobenius      ``W / ||W||_F``                        frobenius           frobenius_normalize
=============  =====================================  ==================  =====================

:func:`apply_normalizer` attaches one by name to every Conv2d / Linear layer of a model;
``NORMALIZERS`` maps names to ``(attach, normalize)``.
"""
from .base import Normalizer
from .bsn import BidirectionalSpectralNorm, bsn, bsn_normalize
from .bssn import ScaledBidirectionalSpectralNorm, bssn, bssn_normalize
from .frobenius import FrobeniusNorm, frobenius, frobenius_normalize
from .gamma import (GammaSpectralNorm, diff_gamma, gamma_normalize, gamma_parameters, gamma_sn,
                    same_gamma)
from .none import Identity, identity, identity_normalize
from .registry import (NORMALIZERS, NormalizerSpec, apply_normalizer, normalized_layers,
                       record_input_sizes)
from .snconv import SpectralNormConv, snconv, snconv_normalize
from .snw import SpectralNormW, snw, snw_normalize
from .ssn import ScaledSpectralNorm, ssn, ssn_normalize

__all__ = [
    "Normalizer", "NORMALIZERS", "NormalizerSpec", "apply_normalizer", "normalized_layers",
    "record_input_sizes",
    "Identity", "identity", "identity_normalize",
    "SpectralNormW", "snw", "snw_normalize",
    "SpectralNormConv", "snconv", "snconv_normalize",
    "ScaledSpectralNorm", "ssn", "ssn_normalize",
    "BidirectionalSpectralNorm", "bsn", "bsn_normalize",
    "ScaledBidirectionalSpectralNorm", "bssn", "bssn_normalize",
    "GammaSpectralNorm", "gamma_sn", "diff_gamma", "same_gamma", "gamma_parameters",
    "gamma_normalize",
    "FrobeniusNorm", "frobenius", "frobenius_normalize",
]
