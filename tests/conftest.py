"""Shared pytest set-up."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _undo_in_process_building():
    """A test that builds a model in this process (``specs.build_model``) installs the building
    environment (import hook, meta-path finders, patched ``torch.load``): undo it after the test,
    so the rest of the session sees plain Python and torch."""
    yield
    building = sys.modules.get("modelcheck.models.building")
    if building is not None and building._state.installed:
        building.uninstall()


def pytest_configure(config):
    """Register the markers here too, so --strict-markers works without pyproject's list."""
    config.addinivalue_line("markers", "slow: runs a real exporter or runtime (seconds to minutes); CI runs them all")
    config.addinivalue_line("markers", "caffe2: needs the Caffe2 runtime (modelcheck --install-caffe2)")
    config.addinivalue_line("markers", "ray: starts a real Ray cluster on 127.0.0.1 (modelcheck audit --executor ray)")


def caffe2_available() -> bool:
    """Is the real Caffe2 runtime usable here? Under CI (MODELCHECK_REQUIRE_CAFFE2=1) a missing
    runtime fails the test instead, so Caffe2 evidence can never pass by being skipped."""
    import os

    import pytest
    from modelcheck.runtimes.caffe2.run import runtime_status

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


def require_browser() -> str:
    """The path of Debian's chromium for the HTML report's headless tests. Skips when it is absent
    (``make browser`` installs it); under CI (MODELCHECK_REQUIRE_BROWSER=1) a missing browser
    fails the test instead, so the browser checks can never pass by being skipped."""
    import os
    import shutil

    import pytest

    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("MODELCHECK_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium not installed and MODELCHECK_REQUIRE_BROWSER=1 requires it (run make browser)")
    pytest.skip("chromium not installed (make browser installs it)")


def require_target(name: str) -> None:
    """Skip a test that needs a target's own environment (``modelcheck --install NAME``) when it is
    absent; under CI (MODELCHECK_REQUIRE_TARGETS=1) a missing one fails the test instead, so a
    target's evidence can never pass by being skipped."""
    import os

    import pytest
    from modelcheck.runtimes.envs import env_status
    from modelcheck.targets import get_profile

    status = env_status(get_profile(name))
    if status.installed:
        return
    if os.environ.get("MODELCHECK_REQUIRE_TARGETS") == "1":
        pytest.fail(f"the {name} target is {status.reason} and MODELCHECK_REQUIRE_TARGETS=1 requires it")
    pytest.skip(f"the {name} target's environment is {status.reason}")
