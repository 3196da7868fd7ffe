"""Session-wide test settings.

* Every test runs torch on one thread (restored after the test): under pytest-xdist (``-n 2``,
  the default in ``pyproject.toml``) two workers share the two cores instead of fighting over
  them, and on a busy 2-core machine a second thread only adds contention.
* With ``SKNET_FAIL_ON_SKIP=1`` (set by ``.ci/run``) a skipped test fails the session: in CI every
  optional dependency is installed, so a skip means a test silently stopped testing anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

_skipped: list[str] = []


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if (
        os.environ.get("SKNET_FAIL_ON_SKIP")
        and _skipped
        and not os.environ.get("PYTEST_XDIST_WORKER")
    ):
        print(f"\nSKNET_FAIL_ON_SKIP: {len(_skipped)} test(s) skipped: {', '.join(_skipped[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
