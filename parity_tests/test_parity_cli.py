"""`eyas parity` on the released checkpoint: exits 0 with a table; non-zero when the sides disagree."""
import subprocess
import sys

import pytest

from eyas.parity import main


def test_parity_cli_passes_on_raptor(raptor_checkpoint, capsys):
    assert main([raptor_checkpoint, "--adam_steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "grad 1.weights_hidden" in out and "float32" in out and "float64" in out
    assert "parity: OK" in out


@pytest.mark.parametrize("dtype,perturbation", [("float64", 1e-8), ("float32", 1e-4)])
def test_parity_cli_fails_when_one_side_is_perturbed(raptor_checkpoint, capsys, dtype, perturbation):
    """A bias shift well below what any user would notice, but above the tolerance, is caught."""
    assert main([raptor_checkpoint, "--dtype", dtype, "--adam_steps", "0", "--perturb_cpp", str(perturbation)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_parity_cli_is_installed_as_eyas_parity(raptor_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "eyas.cli", "parity", raptor_checkpoint, "--dtype", "float64",
                           "--adam_steps", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "parity: OK" in proc.stdout
