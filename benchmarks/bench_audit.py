"""Seconds per audited architecture, and ``modelcheck audit --jobs 2`` against ``--jobs 1``.

Audits, cold (``--no-cache``), in one run of this script:

- the bundled R3Net-style repository ``tests/fixtures/repos/salnet2018`` as cloned (Python 2
  imports, weights loaded in constructors, a torchvision backbone with ``pretrained=True``,
  constructor arguments only a script passes, a module-level import of uninstalled packages);
- torchvision's SqueezeNet and MobileNetV2 modules (installed with ``-c constraints.txt`` if
  missing: the benchmark installs what it needs).

Prints, per audit, the wall time, the number of architectures and seconds per architecture,
every model's status and stages, then the ``--jobs 2`` / ``--jobs 1`` ratio on the torchvision
audit (both runs must agree on every status). Run: ``.venv/bin/python benchmarks/bench_audit.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = ROOT / "tests" / "fixtures" / "repos" / "salnet2018"
ZOO = ["torchvision.models.squeezenet", "torchvision.models.mobilenetv2"]
SHAPE = "1,3,64,64"


def ensure_installed() -> None:
    if importlib.util.find_spec("torchvision") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
                        "torchvision"], check=True)


def audit(targets: list[str], jobs: int, workdir: Path, *extra: str) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "audit", *targets, "--jobs", str(jobs), "--no-cache",
         "--input-shape", SHAPE, "--format", "json", "--artifacts", str(workdir / f"artifacts-{jobs}"), *extra],
        capture_output=True, text=True, cwd=workdir, timeout=3600,
    )
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"modelcheck audit {' '.join(targets)} --jobs {jobs} failed ({done.returncode}): "
                 f"{done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout)


def show(title: str, seconds: float, data: dict) -> None:
    rows = data["models"]
    print(f"{title}: {len(rows)} architecture(s) in {seconds:.1f} s = {seconds / max(1, len(rows)):.1f} s each")
    for row in rows:
        stages = {s["name"]: s["status"] for s in row["stages"]}
        codes = sorted({f["code"] for f in row["findings"]})
        print(f"  {row['model']}: {row['status']}, export {stages.get('export', '-')}, "
              f"ORT {stages.get('onnxruntime', '-')}, Caffe2 {stages.get('caffe2', '-')}, "
              f"findings {' '.join(codes) or '-'}, {row.get('seconds') or 0:.1f} s")


def main(argv: list[str]) -> int:
    ensure_installed()
    zoo = argv or ZOO
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = Path(tmp)
        repo_s, repo = audit([str(REPO)], 1, work)
        show(f"repo {REPO.name} (--jobs 1)", repo_s, repo)
        one_s, one = audit(zoo, 1, work)
        show(f"zoo {' '.join(zoo)} (--jobs 1)", one_s, one)
        two_s, two = audit(zoo, 2, work)
    print(f"zoo --jobs 2: {two_s:.1f} s on {os.cpu_count()} cores; speed-up --jobs 2 / --jobs 1: {one_s / two_s:.2f}x")
    status_one = {row["model"]: row["status"] for row in one["models"]}
    status_two = {row["model"]: row["status"] for row in two["models"]}
    if status_one != status_two:
        print("the two runs disagree on statuses:", status_one, status_two)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
