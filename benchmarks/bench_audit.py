"""``modelcheck audit --jobs 2`` against ``--jobs 1`` on a small pip-installed model zoo.

The zoo is pytorchcv (0.0.74): its factories build models without downloading anything
(``pretrained=False`` by default) and, unlike pretrainedmodels, timm or geffnet, its model
modules import without torchvision (PyPI's torchvision does not import beside this torch
2.13 CPU build). Its metadata still asks for torchvision, so install it without dependencies,
or pip replaces the pinned torch with a CUDA build:

    .venv/bin/pip install --no-deps pytorchcv==0.0.74

Both runs audit the same models cold (``--no-cache``), one after the other, in one process of
this script; the ratio is printed with both wall times and the models' statuses, which must be
equal. Run: ``.venv/bin/python benchmarks/bench_audit.py [TARGET ...]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZOO = ["pytorchcv.models.squeezenet", "pytorchcv.models.mobilenet"]


def audit(targets: list[str], jobs: int, workdir: Path) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "audit", *targets, "--jobs", str(jobs), "--no-cache",
         "--format", "json", "--artifacts", str(workdir / f"artifacts-{jobs}")],
        capture_output=True, text=True, cwd=workdir, timeout=3600,
    )
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"modelcheck audit --jobs {jobs} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout)


def main(argv: list[str]) -> int:
    targets = argv or ZOO
    try:
        import importlib.util

        missing = [t for t in targets if "/" not in t and importlib.util.find_spec(t.split(".")[0]) is None]
    except (ImportError, ValueError):
        missing = []
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install --no-deps pytorchcv==0.0.74)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        one_s, one = audit(targets, 1, Path(tmp))
        two_s, two = audit(targets, 2, Path(tmp))
    status_one = {row["model"]: row["status"] for row in one["models"]}
    status_two = {row["model"]: row["status"] for row in two["models"]}
    print(f"zoo: {' '.join(targets)}: {len(status_one)} models on {os.cpu_count()} cores")
    for row in one["models"]:
        stages = {s["name"]: s["status"] for s in row["stages"]}
        codes = sorted({f["code"] for f in row["findings"]})
        print(f"  {row['model']}: {row['status']}, export {stages.get('export', '-')}, "
              f"ORT {stages.get('onnxruntime', '-')}, Caffe2 {stages.get('caffe2', '-')}, "
              f"findings {' '.join(codes) or '-'}, {row['seconds']:.1f} s")
    print(f"--jobs 1: {one_s:.1f} s")
    print(f"--jobs 2: {two_s:.1f} s")
    print(f"speed-up --jobs 2 / --jobs 1: {one_s / two_s:.2f}x")
    if status_one != status_two:
        print("the two runs disagree on statuses:", status_one, status_two)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
