"""Benchmark: the multi-target smoke test against the bare per-target steps, measured in the same run.

    .venv/bin/python benchmarks/bench_targets.py [--rounds 2]

The model (``BenchNet`` below: a small ResNet-style network, 1×3×128×128, about 0.7M parameters)
goes to ``executorch``, ``litert``, ``ncnn`` and ``ort-mobile``. In each round:

- the bare steps, one fresh process per target in that target's own interpreter, as a user would
  write them from each runtime's documentation (nothing of modelcheck imported): build the model,
  export/convert (``torch.export`` + XNNPACK lowering, ``litert_torch.convert``, TorchScript +
  ``pnnx``, ``torch.onnx.export`` + ``convert_onnx_models_to_ort`` + the mobile usability checker),
  load and run once on the runtime. Timed from process start to exit: the smoke test pays a
  process start and a torch import per target too;
- modelcheck's smoke test for the same targets (``smoke.run.run_smoke`` per target, as
  ``--target executorch,litert,ncnn,ort-mobile`` runs them), timed end to end: child start,
  model build, export, runtime, PyTorch's reference, the comparisons, the report files.

Goal: smoke wall time within 1.2× of the bare sum (median round). Installs the targets it needs
(``make targets``) when they are missing. Exit status 1 when a goal is missed or a stage fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch.nn as nn

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
TARGETS = ("executorch", "litert", "ncnn", "ort-mobile")
SHAPE = (1, 3, 128, 128)
GOAL = 1.2


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + self.skip(x))


class BenchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.MaxPool2d(2, 2))
        self.layers = nn.Sequential(Block(32, 64, 2), Block(64, 96, 2), Block(96, 128, 2))
        self.head = nn.Conv2d(128, 10, 1)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


_BUILD = f"""
import sys, time, numpy as np, torch
sys.path.insert(0, {str(HERE.parent)!r})
from bench_targets import BenchNet
torch.manual_seed(0)
model = BenchNet().eval()
x = torch.randn{SHAPE}
folder = sys.argv[1]
"""

BARE = {
    "executorch": """
from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.exir import to_edge_transform_and_lower
from executorch.runtime import Runtime
edge = to_edge_transform_and_lower(torch.export.export(model, (x,)), partitioner=[XnnpackPartitioner()])
open(folder + "/model.pte", "wb").write(edge.to_executorch().buffer)
out = Runtime.get().load_program(folder + "/model.pte").load_method("forward").execute([x])
""",
    "litert": """
import litert_torch
from ai_edge_litert.interpreter import Interpreter
litert_torch.convert(model, (x,)).export(folder + "/model.tflite")
it = Interpreter(model_path=folder + "/model.tflite"); it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], x.numpy()); it.invoke()
out = it.get_tensor(it.get_output_details()[0]["index"])
""",
    "ncnn": """
import subprocess, ncnn, pnnx
torch.jit.trace(model, (x,)).save(folder + "/model.pt")
subprocess.run([pnnx.EXEC_PATH, "model.pt", "inputshape=[1,3,128,128]", "fp16=0"], cwd=folder, check=True,
               capture_output=True)
net = ncnn.Net(); net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = net.opt.use_fp16_packed = False
net.load_param(folder + "/model.ncnn.param"); net.load_model(folder + "/model.ncnn.bin")
ex = net.create_extractor(); ex.input("in0", ncnn.Mat(x.numpy()[0]).clone()); out = ex.extract("out0")
""",
    "ort-mobile": """
import onnxruntime as ort
from pathlib import Path
from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
from onnxruntime.tools.mobile_helpers import usability_checker
import logging
torch.onnx.export(model, (x,), folder + "/model.onnx", dynamo=False, opset_version=17, input_names=["input"])
convert_onnx_models_to_ort(Path(folder + "/model.onnx"), output_dir=Path(folder),
                           optimization_styles=[OptimizationStyle.Fixed])
ort_file = next(Path(folder).glob("*.ort"))
out = ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
usability_checker.analyze_model(Path(folder + "/model.onnx"), skip_optimize=False, logger=logging.getLogger("b"))
""",
}


def python_of(name: str) -> str:
    from modelcheck.runtimes.envs import job_python
    from modelcheck.targets import get_profile

    return str(job_python(get_profile(name)) or sys.executable)


def bare(name: str) -> float:
    """One target's bare steps in a fresh process of its interpreter; wall seconds."""
    with tempfile.TemporaryDirectory(prefix=f"bare-{name}-") as folder:
        t0 = time.monotonic()
        subprocess.run([python_of(name), "-c", _BUILD + BARE[name], folder], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        return time.monotonic() - t0


def smoke(name: str) -> float:
    """modelcheck's smoke test of the model for one target; wall seconds (every stage must pass)."""
    from modelcheck.config import Config
    from modelcheck.models.specs import ModelSpec
    from modelcheck.smoke.run import run_smoke
    from modelcheck.targets import make_target

    spec = ModelSpec(f"{HERE}:BenchNet", "BenchNet", path=str(HERE), input_shape=SHAPE)
    with tempfile.TemporaryDirectory(prefix=f"smoke-{name}-") as folder:
        t0 = time.monotonic()
        outcome = run_smoke(spec, make_target(name), Config(timeout=600), [], Path(folder))
        seconds = time.monotonic() - t0
    bad = [f"{s.name}: {s.status} {s.detail}" for s in outcome.stages if s.bad]
    if bad:
        raise SystemExit(f"{name}: the smoke test is not clean: {bad}")
    return seconds


def ensure_targets() -> None:
    from modelcheck.runtimes.envs import env_status
    from modelcheck.targets import get_profile

    missing = [n for n in TARGETS if get_profile(n).env and not env_status(get_profile(n)).installed]
    if missing:
        print(f"installing {', '.join(missing)} (make targets)", flush=True)
        subprocess.run(["make", "-C", str(ROOT), "targets"], check=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ensure_targets()
    ratios = []
    for round_ in range(1, args.rounds + 1):
        bare_s = {name: bare(name) for name in TARGETS}
        smoke_s = {name: smoke(name) for name in TARGETS}
        ratio = sum(smoke_s.values()) / sum(bare_s.values())
        ratios.append(ratio)
        for name in TARGETS:
            print(f"round {round_} {name:11s} bare {bare_s[name]:6.1f} s   smoke {smoke_s[name]:6.1f} s")
        print(f"round {round_}: smoke {sum(smoke_s.values()):.1f} s / bare {sum(bare_s.values()):.1f} s = "
              f"{ratio:.2f}x", flush=True)
    median = statistics.median(ratios)
    ok = median <= GOAL
    print(f"multi-target smoke vs bare per-target steps: median {median:.2f}x (goal <= {GOAL}x): "
          f"{'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
