"""Targets with an environment of their own: install it, find its interpreter, say why it is missing.

A target whose packages pin a torch other than the user's (ExecuTorch 1.4.1 pins torch 2.13.0;
this project's own environment has torch 2.14.1 for torchvision) or that are heavy (LiteRT's
converter brings 1.2 GB) declares a :class:`~modelcheck.targets.TargetEnv`. ``modelcheck --install
NAME`` makes a virtual environment ``$MODELCHECK_HOME/envs/NAME`` (default
``~/.cache/modelcheck/envs/NAME``) with its requirements, checks that its modules import there and
writes ``modelcheck-env.json`` (what was installed, with versions) last: an environment without
it is incomplete and the next install starts over. The smoke job of that target then runs in
that interpreter (:func:`modelcheck.jobs.run.worker_argv` makes this modelcheck importable there).

Pins: the requirements name packages, not versions; a machine's pins come from pip's own
``PIP_CONSTRAINT`` (the Makefile points it at ``constraints-targets.txt``). Never imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcheck.targets import DoctorRun, Profile, RuntimeStatus

# modelcheck.targets is imported inside the functions: it imports every profile module, and the
# profiles of env targets import this module, so the env_doctor job (which imports this module
# first) would otherwise find it half-initialized.

STAMP = "modelcheck-env.json"
#: seconds a pip install into a new environment may take (torch plus a converter: minutes, not hours)
_PIP_TIMEOUT = 1800.0


class EnvMissing(RuntimeError):
    """The target's environment is not installed (or incomplete); the message says what to run."""


def home_dir(home: Path | None = None) -> Path:
    """``$MODELCHECK_HOME`` or ``~/.cache/modelcheck``: where installed runtimes live."""
    if home is not None:
        return Path(home)
    return Path(os.environ.get("MODELCHECK_HOME") or Path.home() / ".cache" / "modelcheck")


def env_dir(profile: Profile, home: Path | None = None) -> Path:
    return home_dir(home) / "envs" / profile.name


def env_python(profile: Profile, home: Path | None = None) -> Path:
    return env_dir(profile, home) / "bin" / "python"


def read_stamp(profile: Profile, home: Path | None = None) -> dict[str, Any] | None:
    """What the last complete install wrote, or None when there was none."""
    try:
        data = json.loads((env_dir(profile, home) / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def env_status(profile: Profile, home: Path | None = None) -> RuntimeStatus:
    """Installed when the stamp is there and names the profile's requirements (no process started)."""
    from modelcheck.targets import RuntimeStatus

    assert profile.env is not None
    stamp = read_stamp(profile, home)
    if stamp is None or not env_python(profile, home).exists():
        return RuntimeStatus(False, None, f"not installed (modelcheck --install {profile.name})")
    if stamp.get("requirements") != list(profile.env.requirements):
        return RuntimeStatus(False, None, f"installed for other requirements (modelcheck --install {profile.name})")
    return RuntimeStatus(True, stamp.get("versions", {}).get(profile.env.version_of))


def job_python(profile: Profile, home: Path | None = None) -> Path | None:
    """The interpreter a target's smoke job runs in: None for this one, else its environment's.

    Raises :class:`EnvMissing` (naming the install command) when the environment is not complete.
    """
    if profile.env is None:
        return None
    status = env_status(profile, home)
    if not status.installed:
        raise EnvMissing(f"the {profile.name} target's runtime is {status.reason}")
    return env_python(profile, home)


def install_env(profile: Profile, home: Path | None, progress: Callable[[str], None]) -> RuntimeStatus:
    """Create or repair the target's environment; idempotent (a complete one returns at once)."""
    from modelcheck.targets import InstallError, RuntimeStatus

    assert profile.env is not None
    status = env_status(profile, home)
    if status.installed:  # the stamp is written last, after the imports were checked
        return status
    folder = env_dir(profile, home)
    (folder / STAMP).unlink(missing_ok=True)
    if not env_python(profile, home).exists():
        progress(f"creating {folder}")
        _run([_base_python(), "-m", "venv", "--clear", str(folder)], f"cannot create {folder}")
    progress(f"pip install {' '.join(profile.env.requirements)} (into {folder})")
    _run([str(env_python(profile, home)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *profile.env.requirements], f"pip could not install the {profile.name} target")
    if not _imports_work(profile, home):
        raise InstallError(f"{folder}: installed, but {', '.join(profile.env.imports)} do not import there")
    versions = _versions(profile, home)
    stamp = {"requirements": list(profile.env.requirements), "versions": versions}
    (folder / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return RuntimeStatus(True, versions.get(profile.env.version_of))


def _base_python() -> str:
    """The interpreter a new environment is made from: this one's base (a venv's python makes a venv too)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _run(argv: list[str], failure: str) -> None:
    """Run an install step; InstallError with its last error line when it fails."""
    from modelcheck.targets import InstallError

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_PIP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InstallError(f"{failure}: {exc}") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "ERROR" in line), lines[-1] if lines else "")
        raise InstallError(f"{failure}: {last.strip()}")


def _imports_work(profile: Profile, home: Path | None) -> bool:
    assert profile.env is not None
    python = env_python(profile, home)
    if not python.exists():
        return False
    code = "; ".join(f"import {name}" for name in profile.env.imports)
    try:
        return subprocess.run([str(python), "-c", code], capture_output=True, timeout=300, check=False,
                              cwd=env_dir(profile, home)).returncode == 0  # not the caller's folder on sys.path
    except (OSError, subprocess.TimeoutExpired):
        return False


def _versions(profile: Profile, home: Path | None) -> dict[str, str]:
    """Every distribution's version in the environment (``pip list`` without starting torch)."""
    code = "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower(): d.version " \
           "for d in m.distributions()}))"
    done = subprocess.run([str(env_python(profile, home)), "-c", code], capture_output=True, text=True,
                          cwd=env_dir(profile, home),
                          timeout=120, check=False)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


def installer(name: str) -> Callable[[Path | None, Callable[[str], None]], RuntimeStatus]:
    """A profile's ``install``: :func:`install_env` for the target ``name`` (looked up when called)."""

    def install(home: Path | None, progress: Callable[[str], None]) -> RuntimeStatus:
        from modelcheck.targets import get_profile

        return install_env(get_profile(name), home, progress)

    return install


def status_of(name: str) -> Callable[[Path | None], RuntimeStatus]:
    """A profile's ``status``: :func:`env_status` for the target ``name``."""

    def status(home: Path | None = None) -> RuntimeStatus:
        from modelcheck.targets import get_profile

        return env_status(get_profile(name), home)

    return status


def doctor_of(name: str, not_run: str = "") -> Callable[[Path, dict[str, Any], float], DoctorRun]:
    """A profile's ``doctor``: the one-conv model exported and run in the target's environment.

    The ONNX file and feeds the doctor passes are not used: a non-ONNX target exports the model
    itself, so the check builds the same one-conv model (same seed) there. A target without a
    ``run_file`` (Core ML predicts on macOS only) is only converted; ``not_run`` says why it is
    not run, and the check has no outputs to compare.
    """

    def doctor(path: Path, feeds: dict[str, Any], timeout: float) -> DoctorRun:
        from modelcheck.jobs.run import run_job
        from modelcheck.targets import DoctorRun, get_profile

        profile = get_profile(name)
        try:
            python = job_python(profile)
        except EnvMissing as exc:
            return DoctorRun(None, str(exc), fix=f"modelcheck --install {name}")
        done = run_job("env_doctor", {"target": name, "folder": str(path.parent)}, timeout, python=python)
        if not done.ok:
            return DoctorRun(None, done.describe())
        value = done.value or {}
        if value.get("error"):
            return DoctorRun(None, value["error"], version=value.get("version"))
        if value.get("outputs") is None:  # converted only: nothing ran, so nothing to compare
            reason = not_run or f"the {name} target has no runtime here"
            return DoctorRun(None, f"{value.get('detail', '')}; not run: {reason}", version=value.get("version"),
                             converted_only=True)
        return DoctorRun(value["outputs"], value.get("detail", ""), version=value.get("version"))

    return doctor


def doctor_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job in the target's environment: the doctor's one-conv model through export and run."""
    import numpy as np
    import torch
    from modelcheck.models.specs import ExampleInputs
    from modelcheck.smoke.stages import ExportContext
    from modelcheck.targets import get_profile
    from modelcheck.text import one_line

    profile = get_profile(payload["target"])
    assert profile.export is not None
    version = _versions_here().get(profile.env.version_of if profile.env else "", None)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    folder = Path(payload["folder"]) / profile.name
    folder.mkdir(parents=True, exist_ok=True)
    where = f"torch {torch.__version__} in {Path(sys.executable).parent.parent}"
    try:
        with torch.no_grad():
            path = profile.export(ExportContext(model, ExampleInputs((x,)), ["input"], folder,
                                                {"name": profile.name, "opset": 0, "exporter": profile.exporters[0]}))
        if profile.run_file is None:  # a convert-only target here: the export is the whole check
            return {"outputs": None, "version": version,
                    "detail": f"converts the one-conv model to {path.name} ({where})"}
        outputs = profile.run_file(path, {"input": x.numpy()})
    except Exception as exc:
        return {"error": f"export or run failed: {one_line(exc)}", "version": version}
    return {"outputs": [np.asarray(o).tolist() for o in outputs], "version": version, "detail": where}


def _versions_here() -> dict[str, str]:
    from importlib import metadata

    return {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}


def remove_env(profile: Profile, home: Path | None = None) -> None:
    """Delete a target's environment (tests use a throwaway home)."""
    shutil.rmtree(env_dir(profile, home), ignore_errors=True)
