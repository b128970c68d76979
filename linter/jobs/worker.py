"""Entry point of a child job: ``python -m modelcheck.jobs.worker JOB.json RESULT.json``.

Runs one job function and writes ``{"ok": true, "value": ...}`` or ``{"ok": false, "error":
..., "traceback": ...}``. A hard crash writes nothing; the parent reads that from the exit
status. See :mod:`modelcheck.jobs.run`.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def echo_job(payload: dict[str, Any]) -> Any:
    """A job that exercises isolation itself (tests/test_isolation.py): echo, raise, hang, die or nest a job."""
    action = payload.get("action", "echo")
    if action == "raise":
        raise RuntimeError(payload.get("message", "asked to raise"))
    if action == "hang":
        import time

        if payload.get("pid_file"):
            Path(payload["pid_file"]).write_text(f"{os.getpid()}\n{Path(sys.argv[1]).parent}")  # pid, job folder
        time.sleep(3600)
    if action == "nest":  # a job that runs a job of its own, as an audit job does
        from modelcheck.jobs.run import run_job

        return run_job("echo", payload["inner"], timeout=3600).status
    if action == "abort":
        os.abort()
    if action == "print":
        print(payload.get("message", ""))
    return payload.get("value")


def _limit_memory() -> None:
    limit = os.environ.get("MODELCHECK_MEMORY_LIMIT_MB")
    if limit:
        import resource

        size = int(limit) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None})


def _guard_network() -> None:
    """Block and record network access when ``MODELCHECK_NO_NETWORK`` names a log file.

    ``modelcheck audit`` builds third-party models offline: a constructor that still reaches
    for the network (a weights download) gets an OSError, and the attempt is appended to the log
    so the audit reports it as such. Loopback and Unix sockets stay allowed. Child processes
    inherit the variable, and with it the guard, through this same entry point.
    """
    log = os.environ.get("MODELCHECK_NO_NETWORK")
    if not log:
        return
    import errno

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.getaddrinfo":
            host, port = args[0], args[1]
        elif event == "socket.connect" and isinstance(args[1], tuple):
            host, port = args[1][0], args[1][1]
        else:
            return
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host in _LOCAL_HOSTS or str(host).startswith("127."):
            return
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{host}:{port}\n")
        raise OSError(errno.ENETUNREACH, f"modelcheck audit runs offline: network access to {host}:{port} blocked")

    sys.addaudithook(hook)


def main(argv: list[str]) -> int:
    job_file, result_file = Path(argv[1]), Path(argv[2])
    job = json.loads(job_file.read_text())
    try:
        _limit_memory()
        _guard_network()
        module_name, func_name = job["target"].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(job["payload"])
        result: dict[str, Any] = {"ok": True, "value": value}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {first}" if first else type(exc).__name__,
            "traceback": traceback.format_exc(),
        }
    payload = json.dumps(result, default=str)
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(payload)
    tmp.replace(result_file)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # os._exit: user code may have left non-daemon threads that would otherwise hang the exit
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
