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


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="torch device for the tests marked `device` (tests/test_device.py), e.g. cuda or cuda:1")


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on the device given by --device (default cpu)")
    dev = torch.device(config.getoption("--device"))  # a CUDA device on a machine without one: a usage error
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {dev}: torch.cuda.is_available() is False on this machine")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The --device option as a torch.device (the tests marked `device` run there)."""
    return torch.device(request.config.getoption("--device"))
