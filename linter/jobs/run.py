"""Run a job in a fresh child interpreter, so user code can fail in every way but ours.

The dynamic pass, the smoke test and fix verification import and run the user's model. A
Python exception, a hang, an ``os.abort()`` or a segfault inside Caffe2 must become a reported
result, never a crash or a hang of modelcheck. So each job runs in ``python -m
modelcheck.jobs.worker`` (a fresh interpreter: the parent never imports the user's code or torch),
in its own session so a timeout can kill its whole process group, and talks to the parent
through JSON files (the user's code may print anything on stdout).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcheck.text import signal_name

#: job kind → "module:function"; the function takes the payload dict and returns JSON data
JOBS: dict[str, str] = {
    "echo": "modelcheck.jobs.worker:echo_job",
    "inspect": "modelcheck.trace.job:run",
    "discover": "modelcheck.models.specs:discover_job",
    "smoke": "modelcheck.smoke.job:run",
    "verify_fix": "modelcheck.fix.job:run",
    "doctor": "modelcheck.doctor:doctor_job",
    "audit_list": "modelcheck.audit.run:list_job",
    "audit_model": "modelcheck.audit.run:audit_model_job",
    "optable": "modelcheck.ops.job:run",
    "env_doctor": "modelcheck.runtimes.envs:doctor_job",
}


@dataclass(frozen=True)
class ChildOutcome:
    """How a child job ended. ``status``: "ok", "error", "crashed" or "timeout"; or "lost" when an
    executor lost the job itself (a Ray worker or node died under it: the machinery's doing, not
    the model's, so such a row is reported but never cached)."""

    status: str
    value: Any = None
    error: str = ""  # one line, e.g. "RuntimeError: shape mismatch"
    traceback_tail: str = ""  # the last lines of the traceback, or of stderr for a crash
    signal: int | None = None
    seconds: float = 0.0
    stdout_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON, e.g. to come back from a job that ran on another machine (a Ray task)."""
        return {"status": self.status, "value": self.value, "error": self.error,
                "traceback_tail": self.traceback_tail, "signal": self.signal, "seconds": self.seconds,
                "stdout_tail": self.stdout_tail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChildOutcome:
        return cls(status=str(data["status"]), value=data.get("value"), error=str(data.get("error") or ""),
                   traceback_tail=str(data.get("traceback_tail") or ""), signal=data.get("signal"),
                   seconds=float(data.get("seconds") or 0.0), stdout_tail=str(data.get("stdout_tail") or ""))

    def describe(self) -> str:
        """One line for a report."""
        if self.status == "timeout":
            return f"timed out after {self.seconds:.0f} s"
        if self.status == "crashed":
            name = signal_name(self.signal)
            last = self.traceback_tail.strip().splitlines()[-1:] or [""]
            return f"crashed ({name}){': ' + last[0] if last[0] else ''}"
        return self.error


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_job(
    kind: str,
    payload: dict[str, Any],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    memory_limit_mb: int | None = None,
    python: Path | None = None,
) -> ChildOutcome:
    """Run job ``kind`` with ``payload`` in a child interpreter and wait at most ``timeout`` s.

    ``python``: another environment's interpreter (a target's own, :mod:`modelcheck.runtimes.envs`);
    it imports this very modelcheck from where it lives here (:func:`worker_argv`), so the two
    never drift apart, and needs only the packages the job itself imports.
    """
    if kind not in JOBS:
        raise KeyError(f"unknown job kind {kind!r}")
    with tempfile.TemporaryDirectory(prefix="modelcheck-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        result_file = Path(tmp) / "result.json"
        job_file.write_text(json.dumps({"kind": kind, "target": JOBS[kind], "payload": payload}))
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONFAULTHANDLER"] = "1"  # a segfault leaves a Python stack on stderr
        child_env["TMPDIR"] = tmp  # what a killed job (or its own jobs) leaves in temp goes with this folder
        if memory_limit_mb:
            child_env["MODELCHECK_MEMORY_LIMIT_MB"] = str(memory_limit_mb)
        argv = _dies_with_parent([*worker_argv(python), str(job_file), str(result_file)])
        ended = _run_child(argv, Path(tmp), timeout, cwd, child_env)
        if isinstance(ended, ChildOutcome):  # timed out
            return ended
        return _outcome(*ended, result_file)


def _run_child(argv: list[str], tmp: Path, timeout: float, cwd: Path | None,
               env: dict[str, str]) -> ChildOutcome | tuple[int, float, str, str]:
    """Start the child in its own session and wait; (exit status, seconds, stderr, stdout), or the
    timeout's outcome. Its whole process group is killed either way: no grandchild outlives it."""
    started = time.monotonic()
    with open(tmp / "stdout", "w+b") as out, open(tmp / "stderr", "w+b") as err:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                                   start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return ChildOutcome("timeout", seconds=time.monotonic() - started, traceback_tail=_tail(_read(err)),
                                stdout_tail=_tail(_read(out)))
        finally:
            _kill_group(process)
        return returncode, time.monotonic() - started, _read(err), _read(out)


def _outcome(returncode: int, seconds: float, stderr: str, stdout: str, result_file: Path) -> ChildOutcome:
    """How a child that exited ended: killed by a signal, gone without a result, raised, or done."""
    if returncode < 0:
        return ChildOutcome("crashed", signal=-returncode, seconds=seconds, traceback_tail=_tail(stderr),
                            stdout_tail=_tail(stdout))
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        return ChildOutcome("crashed", seconds=seconds, traceback_tail=_tail(stderr), stdout_tail=_tail(stdout),
                            error=f"the child exited with status {returncode} without a result")
    if result.get("ok"):
        return ChildOutcome("ok", value=result.get("value"), seconds=seconds, stdout_tail=_tail(stdout))
    return ChildOutcome("error", error=result.get("error", "unknown error"),
                        traceback_tail=_tail(result.get("traceback", "")), seconds=seconds, stdout_tail=_tail(stdout))


#: run in another environment's interpreter: make ``modelcheck`` (and its ``rules``/``fixers``, which may live
#: in other folders in an editable install) importable from this environment's folders, then run the worker
_BOOTSTRAP = """
import importlib.abc, importlib.util, json, runpy, sys
roots = json.loads(sys.argv.pop(1))
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in roots:
            return importlib.util.spec_from_file_location(
                name, roots[name] + "/__init__.py", submodule_search_locations=[roots[name]])
        return None
sys.meta_path.insert(0, Finder())
runpy.run_module("modelcheck.jobs.worker", run_name="__main__", alter_sys=True)
"""


def worker_argv(python: Path | None = None) -> list[str]:
    """The command that starts a worker: this interpreter's ``-m``, or another's with the bootstrap."""
    if python is None or Path(python) == Path(sys.executable):
        return [sys.executable, "-m", "modelcheck.jobs.worker"]
    import importlib.util

    roots = {}
    for name in ("modelcheck", "modelcheck.rules", "modelcheck.fixers"):  # found, not imported
        spec = importlib.util.find_spec(name)
        roots[name] = (spec.submodule_search_locations or [""])[0] if spec else ""
    return [str(python), "-c", _BOOTSTRAP, json.dumps(roots)]


def _dies_with_parent(argv: list[str]) -> list[str]:
    """``setpriv --pdeathsig KILL``: a job outlives no parent that was killed outright.

    Jobs nest (an audit job runs inspect and smoke jobs, each in its own session): the group
    kill of a timed-out audit job cannot reach them, and a hanging model would then spin
    forever as an orphan. Without util-linux's setpriv (not Linux) the group kill is all there is.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else argv


def _read(handle: Any) -> str:
    handle.flush()
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
