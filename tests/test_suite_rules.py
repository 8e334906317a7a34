"""The suite's own rules (conftest.py at the repository root): a skipped test fails unless EYAS_ALLOW_SKIPS=1, and
under CI hypothesis is derandomised."""
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
SKIPPING = """
import pytest

pytest.importorskip("no_such_module_anywhere")  # a whole module skipped at collection


def test_never_collected():
    pass
"""
SKIPPING_TEST = """
import pytest

def test_skips():
    pytest.skip("no rl-tools headers")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makepyfile(test_skips=SKIPPING_TEST, test_module_skip=SKIPPING)
    return pytester


def test_a_skip_fails_the_suite(suite, monkeypatch):
    monkeypatch.delenv("EYAS_ALLOW_SKIPS", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--continue-on-collection-errors")
    result.assert_outcomes(failed=1, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(["*the suite allows no skips*"])


def test_skips_allowed_when_asked(suite, monkeypatch):
    monkeypatch.setenv("EYAS_ALLOW_SKIPS", "1")
    suite.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(skipped=2, xfailed=1)


@pytest.mark.parametrize("ci, derandomized", [("1", True), (None, False)])
def test_hypothesis_is_derandomised_under_ci(pytester, monkeypatch, ci, derandomized):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makepyfile(test_profile="import hypothesis\n\ndef test_profile():\n"
                                     "    print('derandomize', hypothesis.settings.default.derandomize)\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([f"*derandomize {derandomized}*"])
