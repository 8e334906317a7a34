"""Shared fixtures of tests/."""
from __future__ import annotations

import os

import pytest
import torch

# envs built by the suite run eager unless EYAS_COMPILE says otherwise (each first compile costs ~30-60 s on 2
# cores); the tests marked `compiled` build the compiled path on purpose
os.environ.setdefault("EYAS_COMPILE", "0")


@pytest.fixture(scope="module")
def single_thread():
    """Small tensors: one intra-op thread avoids oversubscription on shared machines (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
