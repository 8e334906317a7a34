"""Every row of `eyas parity` can fail: each passes on the real data (the released RAPTOR checkpoint and a random
student, float32 and float64), and fails, alone, once its own rl-tools quantity is moved by 1.5x its tolerance."""
import numpy as np
import pytest
import torch

from eyas import raptor_checkpoint_path
from eyas.parity import ABSOLUTE, FLOAT32_OBSERVED, MARGIN, TOLERANCE, measure, rows
from eyas.rltools_h5 import load_rltools_h5
from parity_helpers import random_policy, random_sequences

QUANTITIES = [*TOLERANCE["float32"]]


@pytest.fixture(scope="module", params=["float32", "float64"])
def measured(request):
    """(dtype, {source: measured quantities}) for RAPTOR (eyas parity's own inputs) and a random student."""
    dtype = getattr(torch, request.param)
    raptor = load_rltools_h5(str(raptor_checkpoint_path()), dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 64, raptor.num_obs, generator=g, dtype=dtype)
    reset = torch.rand(500, 64, generator=g) < 2e-3
    y = 0.5 * torch.randn(500, 64, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    student = random_policy(22, dtype, seed=5)
    sequences = random_sequences(500, 64, 22, dtype, seed=6, reset_prob=1e-2)
    return request.param, {"raptor": measure(raptor, x, y, reset, adam_steps=10),
                           "student": measure(student, *sequences, adam_steps=3)}


def test_every_row_passes_on_real_data(measured):
    dtype, sources = measured
    for source, quantities in sources.items():
        table = rows(quantities, dtype)
        assert list(quantities) == QUANTITIES and len(table) == len(QUANTITIES)
        assert all(r.ok for r in table), (source, [r for r in table if not r.ok])


@pytest.mark.parametrize("quantity", QUANTITIES)
def test_each_row_fails_when_its_quantity_alone_is_perturbed(measured, quantity):
    dtype, sources = measured
    pairs = dict(sources["raptor"])
    row = dict(zip(pairs, rows(pairs, dtype)))[quantity]
    ours, cpp = pairs[quantity]
    cpp = np.array(cpp, np.float64, copy=True)
    scale = 1.0 if quantity in ABSOLUTE else float(np.abs(cpp).max())
    # 1.5x the tolerance at one element; where that is 0 (h0's gradient is zero on both sides) any difference
    cpp.flat[cpp.size // 2] += 1.5 * row.tolerance * scale or 1e-30
    pairs[quantity] = (ours, cpp)
    assert [r.quantity for r in rows(pairs, dtype) if not r.ok] == [row.quantity]


def test_float32_tolerances_are_the_margin_times_the_observed_error():
    """Rounded down to two digits: never looser than MARGIN x the observed error, nor much tighter."""
    for quantity, observed in FLOAT32_OBSERVED.items():
        assert 0.9 * MARGIN * observed <= TOLERANCE["float32"][quantity] <= MARGIN * observed, quantity
