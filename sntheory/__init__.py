"""sntheory: executable, falsifiable checks of the theory of spectral normalization.

Public names are re-exported here; implementation lives in the submodules.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("sntheory")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
