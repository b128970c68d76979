"""Seconds per audited architecture, and ``modelcheck audit --jobs 2`` against ``--jobs 1``.

Audits, cold (``--no-cache``), in one run of this script:

- the bundled R3Net-style repository ``tests/fixtures/repos/salnet2018`` as cloned (Python 2
  imports, weights loaded in constructors, a torchvision backbone with ``pretrained=True``,
  constructor arguments only a script passes, a module-level import of uninstalled packages);
- torchvision's SqueezeNet and MobileNetV2 modules (installed with ``-c constraints.txt`` if
  missing: the benchmark installs what it needs).

Prints, per audit, the wall time, the number of architectures and seconds per architecture,
every model's status and stages, then the ``--jobs 2`` / ``--jobs 1`` ratio on the torchvision
audit, and models per minute for local ``--jobs 1``, local ``--jobs 2`` and ``--executor ray`` on
a Ray cluster this script starts on 127.0.0.1 (a head node and one worker node, one CPU each,
separate processes: :class:`modelcheck.audit.ray.LoopbackCluster`) and stops after it. The
three zoo runs share one memory cap (``--memory-mb``) and must agree on every status. Without
Ray installed the Ray run is left out with a note. Run: ``.venv/bin/python benchmarks/bench_audit.py``.
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
MEMORY = "8192"  # MiB: the same cap for the local and the Ray runs (Ray's default request)


def ensure_installed() -> None:
    if importlib.util.find_spec("torchvision") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
                        "torchvision"], check=True)


def audit(targets: list[str], jobs: int | None, workdir: Path, *extra: str,
          env: dict[str, str] | None = None) -> tuple[float, dict]:
    """One cold audit; ``jobs`` None: no --jobs (the Ray run, where the cluster's CPUs decide)."""
    label = f"jobs{jobs}" if jobs else "ray"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "audit", *targets, *(["--jobs", str(jobs)] if jobs else []),
         "--no-cache", "--input-shape", SHAPE, "--format", "json", "--artifacts", str(workdir / f"artifacts-{label}"),
         *extra],
        capture_output=True, text=True, cwd=workdir, timeout=3600, env=env,
    )
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"modelcheck audit {' '.join(targets)} ({label}) failed ({done.returncode}): "
                 f"{done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout)


def audit_on_ray(zoo: list[str], work: Path) -> tuple[float, dict] | None:
    """The zoo on a two-node Ray cluster on 127.0.0.1 (cluster start-up timed apart, not counted)."""
    from modelcheck.audit.ray import LoopbackCluster, ray_available

    if not ray_available():
        print("ray is not installed (pip install -e '.[ray]'): no Ray run")
        return None
    started = time.monotonic()
    with LoopbackCluster(work / "ray", workers=1, cpus_per_node=1) as cluster:
        print(f"Ray cluster on {cluster.address}: head + 1 worker node, 1 CPU each, "
              f"started in {time.monotonic() - started:.1f} s")
        result = audit(zoo, None, work, "--memory-mb", MEMORY, "--executor", "ray", "--ray-address",
                       cluster.address, env=cluster.env)
    return result


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
        one_s, one = audit(zoo, 1, work, "--memory-mb", MEMORY)
        show(f"zoo {' '.join(zoo)} (--jobs 1)", one_s, one)
        two_s, two = audit(zoo, 2, work, "--memory-mb", MEMORY)
        on_ray = audit_on_ray(zoo, work)
        if on_ray:
            show(f"zoo {' '.join(zoo)} (--executor ray)", *on_ray)
    print(f"zoo --jobs 2: {two_s:.1f} s on {os.cpu_count()} cores; speed-up --jobs 2 / --jobs 1: {one_s / two_s:.2f}x")
    runs = {"local --jobs 1": (one_s, one), "local --jobs 2": (two_s, two)}
    if on_ray:
        runs["ray (2 nodes x 1 CPU)"] = on_ray
    print("models per minute: " + ", ".join(f"{name} {len(data['models']) * 60 / seconds:.1f}"
                                            for name, (seconds, data) in runs.items()))
    statuses = {name: {row["model"]: row["status"] for row in data["models"]} for name, (_, data) in runs.items()}
    if any(status != statuses["local --jobs 1"] for status in statuses.values()):
        print("the runs disagree on statuses:", statuses)
        return 1
    print(f"statuses agree across {', '.join(statuses)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
