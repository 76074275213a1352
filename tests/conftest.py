"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a whole module, restored afterwards.

    The lab, normalizer and plug-in tests run tiny (often float64) networks and small SVDs: on the
    shared 2-core machine two torch threads made them many times slower (measured: 30 Adam steps
    5.9 s against 0.37 s; a 500 x 300 SVD 25x longer).  Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
