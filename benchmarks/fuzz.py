"""The long fuzz run of the static pass and the fixers: ``tests/test_fuzz.py``, for minutes.

    .venv/bin/python benchmarks/fuzz.py [--minutes 10] [--scale 4] [-k never_raises]

Runs ``tests/test_fuzz.py`` again and again with ``MODELCHECK_FUZZ_SCALE`` (default 4) times
the CI budget per property (a round takes about ``scale`` x 30 s on an idle 2-core machine; the
last round started before the time is up runs to its end), fresh random examples each round (a
new ``--hypothesis-seed``), and the example database in ``.hypothesis/`` (git-ignored): a failure
found once is replayed first on every later run until it is fixed. Stops after the first failing
round (exit status 1, with pytest's report: the shrunk program and ``@reproduce_failure``), or
when the time is up (exit 0). Installs hypothesmith into this venv if it is missing (pinned in constraints.txt).
Imports no torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ensure_hypothesmith() -> None:
    if importlib.util.find_spec("hypothesmith") is None:
        print("installing hypothesmith (pinned in constraints.txt)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "-c", str(ROOT / "constraints.txt"), "hypothesmith"], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="stop starting rounds after this long")
    parser.add_argument("--scale", type=float, default=4.0, help="examples per property, times the CI budget")
    parser.add_argument("-k", default="", help="only the properties whose test name matches (pytest -k)")
    args = parser.parse_args(argv)
    ensure_hypothesmith()
    env = {**os.environ, "MODELCHECK_FUZZ_SCALE": str(max(args.scale, 1.01))}
    deadline = time.monotonic() + args.minutes * 60
    rounds = 0
    while time.monotonic() < deadline:
        rounds += 1
        seed = random.randrange(2**32)
        print(f"round {rounds}: --hypothesis-seed={seed}", flush=True)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz.py",
                   f"--hypothesis-seed={seed}", "--hypothesis-show-statistics"]
        if args.k:
            command += ["-k", args.k]
        started = time.monotonic()
        status = subprocess.run(command, cwd=ROOT, env=env).returncode
        print(f"round {rounds}: {time.monotonic() - started:.0f} s, pytest exit {status}", flush=True)
        if status != 0:
            print(f"a property failed (seed {seed}); the failing example is kept in .hypothesis/ and is "
                  "replayed first next time", flush=True)
            return 1
    print(f"fuzzed for {args.minutes:g} minute(s), {rounds} round(s): no failure", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
