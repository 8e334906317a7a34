"""Rules of the whole suite (parity_tests/ and tests/): no test skips unless EYAS_ALLOW_SKIPS=1 says it may (a skipped
parity, committed-student or export test would pass CI without checking anything), and under CI (the CI variable
set, as .ci/run does) hypothesis draws the same examples on every run. Under pytest-xdist (scripts/test.sh) each
worker's torch uses one thread: the workers already fill the cores, and oversubscribed threads slow all down."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

ALLOW_SKIPS = "EYAS_ALLOW_SKIPS"
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before any test module imports torch

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", derandomize=False)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _refuse_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get(ALLOW_SKIPS) != "1":
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped ({reason}); the suite allows no skips (set {ALLOW_SKIPS}=1 to allow them)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _refuse_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _refuse_skip(outcome.get_result())
