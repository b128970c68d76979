"""Small helpers every side shares: an exception or a signal as one line of a report, and the
JSON files a job and its parent leave for each other.

One copy each, so a report says "crashed (SIGSEGV)" and "RuntimeError: ..." the same way
whichever stage wrote it. Imports nothing heavy: the pre-commit path loads it too.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

#: boilerplate the exporter appends to the one line worth showing
_NOISE = re.compile(r"\s*(?:\[Caused by the value|Please feel free to request support).*$")


def first_line(text: str) -> str:
    """The first non-blank line, stripped ("" for none)."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: exporter and user-code messages run to dozens of lines."""
    line = _NOISE.sub("", first_line(str(exc)))
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def signal_name(number: int | None) -> str:
    """``SIGSEGV`` for 11; ``signal 99`` for a number with no name; ``unknown signal`` for none."""
    if not number:
        return "unknown signal"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` when it is missing, half-written or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
