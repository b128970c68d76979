"""Entry point of a child job: ``python -m modelcheck.worker JOB.json RESULT.json``.

Runs one job function and writes ``{"ok": true, "value": ...}`` or ``{"ok": false, "error":
..., "traceback": ...}``. A hard crash writes nothing; the parent reads that from the exit
status. See :mod:`modelcheck.isolation`.
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
    """A job that exercises isolation itself: echo, raise, hang or die as asked (tests use it)."""
    action = payload.get("action", "echo")
    if action == "raise":
        raise RuntimeError(payload.get("message", "asked to raise"))
    if action == "hang":
        import time

        time.sleep(3600)
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


def main(argv: list[str]) -> int:
    job_file, result_file = Path(argv[1]), Path(argv[2])
    job = json.loads(job_file.read_text())
    try:
        _limit_memory()
        module_name, func_name = job["target"].split(":")
        func = getattr(importlib.import_module(module_name), func_name)
        value = func(job["payload"])
        result: dict[str, Any] = {"ok": True, "value": value}
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is a result
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
