"""Fixtures for the parity tests."""
from eyas import raptor_checkpoint_path

import pytest
import torch

torch.set_num_threads(1)  # parity, not speed; keeps the suite predictable on 2 cores


@pytest.fixture(scope="session")
def raptor_checkpoint():
    """The released RAPTOR student from the foundation-policy package (a test dependency)."""
    return str(raptor_checkpoint_path())
