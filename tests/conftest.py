"""Shared pytest set-up."""

from __future__ import annotations


def pytest_configure(config):
    """Register the markers here too, so --strict-markers works without pyproject's list."""
    config.addinivalue_line("markers", "slow: runs a real exporter or runtime (seconds to minutes); CI runs them all")
    config.addinivalue_line("markers", "caffe2: needs the Caffe2 runtime (modelcheck --install-caffe2)")


def caffe2_available() -> bool:
    """Is the real Caffe2 runtime usable here? Under CI (MODELCHECK_REQUIRE_CAFFE2=1) a missing
    runtime fails the test instead, so Caffe2 evidence can never pass by being skipped."""
    import os

    import pytest
    from modelcheck.caffe2_runtime import runtime_status

    status = runtime_status()
    if status.installed and os.geteuid() == 0:
        return True
    why = status.reason or "the Caffe2 runtime runs in a chroot and needs root"
    if os.environ.get("MODELCHECK_REQUIRE_CAFFE2") == "1":
        pytest.fail(f"Caffe2 runtime unavailable ({why}) and MODELCHECK_REQUIRE_CAFFE2=1 requires it")
    return False


def require_caffe2() -> None:
    """Skip a test that needs the real Caffe2 runtime when it is absent (fail under CI, see above)."""
    import pytest

    if not caffe2_available():
        pytest.skip("Caffe2 runtime not installed (run modelcheck --install-caffe2)")
