"""pytest plugin (loaded by the root conftest): with LMM_EDIT_REQUIRE_ALL=1 a skip fails unless it needs CUDA.

CI sets the variable, so a broken install step (ComfyUI, chromium, playwright, a fixture) fails the run instead
of silently skipping the tests that need it. Skips at collection (``importorskip`` at module level) count too.
"""

from __future__ import annotations

import os
import re

import pytest

REQUIRE_ALL = "LMM_EDIT_REQUIRE_ALL"
ALLOWED_SKIP = re.compile(r"\bCUDA\b")  # the reason of every skip that needs a GPU names CUDA


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


def fail_forbidden_skip(report) -> None:
    if os.environ.get(REQUIRE_ALL) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if ALLOWED_SKIP.search(reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"{REQUIRE_ALL}=1: only tests that need CUDA may skip; this one skipped with "
                       f"\"{reason}\". Install what it names, or unset {REQUIRE_ALL} to allow the skip.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    fail_forbidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    fail_forbidden_skip(outcome.get_result())
