"""Session-wide test settings.

* Every test runs torch on one thread (restored after the test): under pytest-xdist (``-n 2``,
  the default in ``pyproject.toml``) two workers share the two cores instead of fighting over
  them, and on a busy 2-core machine a second thread only adds contention.
* With ``SKNET_FAIL_ON_SKIP=1`` (set by ``.ci/run``) a skipped test fails the session: in CI every
  optional dependency is installed, so a skip means a test silently stopped testing anything.
* ``machine_fingerprint``: what stored floating-point numbers depend on (torch version, ATen's CPU
  capability, oneDNN's ISA). A test that compares against numbers written on another machine is
  bit-exact only where the fingerprint recorded with them matches, and uses a tolerance elsewhere.
* TorchInductor's on-disk cache is kept per machine fingerprint: torch 2.14 does not key its
  compiled CPU kernels by the ISA it compiled for, so a cache written natively on an AVX-512 CPU
  and read with ``ATEN_CPU_CAPABILITY=avx2`` (as CI's second, ISA-capped run does) returns garbage
  or crashes, and so would a cache carried from one CPU to another in ``/tmp``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_skipped: list[str] = []

#: Environment variables that change which CPU kernels torch, oneDNN and MKL run.
ISA_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _inductor_cache_key() -> str:
    parts = [torch.__version__, torch.backends.cpu.get_cpu_capability(), _cpu_flags()]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ISA_ENV]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # inherited by the subprocesses tests start
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(
        tempfile.gettempdir(), f"sknet-tests-inductor-{_inductor_cache_key()}"
    )

_ONEDNN_PROBE = """
import torch
x = torch.randn(4, 32, 16, 16)
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    torch.nn.functional.conv2d(x, torch.randn(32, 32, 3, 3), padding=1)
"""


def onednn_isa() -> str:
    """The ISA oneDNN dispatches to in this environment (its verbose header, e.g. ``Intel AVX2``
    or ``Intel AVX-512 with Intel DL Boost and bfloat16 support``); ``"unknown"`` if it cannot
    be read. Read in a child process: oneDNN prints its header once per process."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _ONEDNN_PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in out.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown"


@pytest.fixture(scope="session")
def machine_fingerprint() -> dict[str, str]:
    """What stored floating-point results depend on, in the keys fixtures record them under."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_isa": onednn_isa(),
    }


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
