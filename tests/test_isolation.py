"""Child jobs: every way a job can end is an outcome, and nothing it started outlives it.

Runs the real ``python -m modelcheck.jobs.worker`` (no torch: the echo job only) in child processes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from modelcheck.jobs.run import run_job


def _alive(pid: int) -> bool:
    """Running, and not a zombie that a container's init has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_value_error_and_crash_are_outcomes() -> None:
    assert run_job("echo", {"value": [1, "two"]}, timeout=30).value == [1, "two"]
    raised = run_job("echo", {"action": "raise", "message": "no weights"}, timeout=30)
    assert (raised.status, raised.error) == ("error", "RuntimeError: no weights")
    aborted = run_job("echo", {"action": "abort"}, timeout=30)
    assert (aborted.status, aborted.signal) == ("crashed", signal.SIGABRT)
    assert aborted.describe().startswith("crashed (SIGABRT)")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_timed_out_job_leaves_no_process_and_no_temp_folder_even_when_nested(tmp_path: Path) -> None:
    """An audit job killed past its budget must take the hanging inspect job it started with it."""
    pid_file = tmp_path / "inner.pid"
    outcome = run_job("echo", {"action": "nest", "inner": {"action": "hang", "pid_file": str(pid_file)}}, timeout=3)
    assert outcome.status == "timeout"
    pid, folder = pid_file.read_text().splitlines()
    inner = int(pid)
    deadline = time.monotonic() + 5
    while _alive(inner) and time.monotonic() < deadline:
        time.sleep(0.05)
    survived = _alive(inner)
    if survived:
        os.kill(inner, signal.SIGKILL)  # a failing run must not leave the orphan behind either
    assert not survived, "the inner job outlived the outer one"
    assert not Path(folder).exists(), "the inner job's temp folder was left behind"
