"""Run every benchmark, each reporting ratios against a baseline measured in the same run.

    .venv/bin/python benchmarks/run_all.py

- bench_static.py: ``--static-only`` vs TorchFix 0.7.0 and a bare libcst / ast parse (timm/models)
- bench_hard_inputs.py: ``--static-only`` time and peak memory on a huge generated module and a
  Lua-converted ResNeXt-101
- bench_smoke.py: the smoke test vs the bare export, ONNX Runtime and Caffe2 steps (ResNeXt-101 size)
- bench_audit.py: seconds per audited architecture (a bundled R3Net-style repo, torchvision modules)
  and ``audit --jobs 2`` vs ``--jobs 1``
- bench_tolerance.py: the smoke test's default tolerance between the float noise of right models
  (torchvision and timm backbones, random init) and the smallest difference of known export bugs
- bench_targets.py: the smoke test at executorch, litert, ncnn and ort-mobile vs the bare
  per-target export/convert/run steps, each in its target's own environment

Each benchmark fetches what it needs from the package registries into ``benchmarks/.cache``
or the venv. Exit status: the number of benchmarks that missed a goal or failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("bench_static.py", "bench_hard_inputs.py", "bench_smoke.py", "bench_audit.py", "bench_tolerance.py",
              "bench_targets.py")


def main() -> int:
    failed = 0
    for name in BENCHMARKS:
        print(f"\n===== {name} =====", flush=True)
        status = subprocess.run([sys.executable, str(HERE / name)]).returncode
        if status:
            print(f"{name}: exit status {status}")
            failed += 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
