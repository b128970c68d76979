"""The static pass (``modelcheck FILE --static-only``) on hard inputs: time and peak memory.

One command, nothing to download (the inputs are generated into ``benchmarks/.cache``):

    .venv/bin/python benchmarks/bench_hard_inputs.py [--runs N] [--huge-runs N] [--no-bytecode-cache]

(a) a huge generated module: 60,000 bilinear ``F.interpolate`` calls (4.4 MB) in the methods of
    one class, every call a finding (``--huge-functions 1`` puts them all in one method);
    goal (issue "the static pass hardened"): at most 15 s and 1 GB peak RSS. First 48-78 s and
    2.8-3.1 GB; 25 s and 710 MB with libcst parsing it in pieces; about 5 s of CPU and 640 MB
    since the families it has run on the stdlib ``ast`` (``static.fast``) and the cyclic GC
    stays off while a file is checked;
(b) a Lua-converted ResNeXt-101 32x4d as Lua Torch's converter writes it (688 lines, one
    module-level ``nn.Sequential``, 97 lambdas in Lambda/LambdaMap/LambdaReduce), a fresh
    process each run; goal: median cold wall time at most 0.3 s. First 0.52-0.56 s (0.155 s
    importing libcst, 0.2 s parsing the statement, 0.24 s finding positions); about 0.17 s of
    CPU since libcst is not imported for it, 0.02 s of which checking the file.

Each run is a fresh ``modelcheck --static-only --format json`` process; wall time, the child's
CPU time and its peak RSS (``resource.getrusage(RUSAGE_CHILDREN)``, one child at a time, so
``ru_maxrss`` is the largest child so far, measured in a fresh process per input) are printed,
the median of the runs. Wall times on a shared machine move with its load (the load average is
printed), CPU times less. The children run with a bytecode cache (``PYTHONPYCACHEPREFIX`` in
``benchmarks/.cache``, even where ``PYTHONDONTWRITEBYTECODE`` is set), as an installed hook's
venv has one, after one run that fills it; ``--no-bytecode-cache`` measures without (every
module of modelcheck compiled from source each run, about 0.04 s more). Exit status 1 if a
goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "hard-inputs"
BIN = Path(sys.executable).parent  # the project's venv: modelcheck is installed there

HUGE_CALLS = 60_000
HUGE_GOAL_SECONDS, HUGE_GOAL_MB = 15.0, 1024
LUA_GOAL_SECONDS = 0.3


def huge_module(calls: int = HUGE_CALLS, functions: int = 12) -> str:
    """``calls`` lines ``y{i} = F.interpolate(self.x, scale_factor=2.0, mode="bilinear")`` in
    ``functions`` methods of one nn.Module class: every line a finding (MC201 at caffe2)."""
    out = ["import torch.nn as nn", "import torch.nn.functional as F", "", "",
           "class Big(nn.Module):", "    def __init__(self):", "        super().__init__()", ""]
    per = -(-calls // functions)
    for start in range(0, calls, per):
        out.append(f"    def forward_{start // per}(self, x):")
        out.extend(f'        y{i} = F.interpolate(self.x, scale_factor=2.0, mode="bilinear")'
                   for i in range(start, min(calls, start + per)))
        out += ["        return x", ""]
    return "\n".join(out) + "\n"


def lua_resnext(blocks: tuple[int, ...] = (3, 4, 23, 3)) -> str:
    """A ResNeXt-101 32x4d as Lua Torch's converter (convert_torch.py) writes it: tabs, no spaces
    after commas, one module-level nn.Sequential, a LambdaMap/LambdaReduce pair per block and a
    Lambda for each identity shortcut."""
    t = "\t"
    out = ["from functools import reduce", "import torch", "import torch.nn as nn", "", "",
           "class LambdaBase(nn.Sequential):", "    def __init__(self, fn, *args):",
           "        super(LambdaBase, self).__init__(*args)", "        self.lambda_func = fn", "",
           "    def forward_prepare(self, input):", "        output = []",
           "        for module in self._modules.values():", "            output.append(module(input))",
           "        return output if output else input", "", "",
           "class Lambda(LambdaBase):", "    def forward(self, input):",
           "        return self.lambda_func(self.forward_prepare(input))", "", "",
           "class LambdaMap(LambdaBase):", "    def forward(self, input):",
           "        return list(map(self.lambda_func, self.forward_prepare(input)))", "", "",
           "class LambdaReduce(LambdaBase):", "    def forward(self, input):",
           "        return reduce(self.lambda_func, self.forward_prepare(input))", "", "",
           "resnext_101_32x4d = nn.Sequential( # Sequential,",
           t + "nn.Conv2d(3,64,(7, 7),(2, 2),(3, 3),1,1,bias=False),", t + "nn.BatchNorm2d(64),", t + "nn.ReLU(),",
           t + "nn.MaxPool2d((3, 3),(2, 2),(1, 1)),"]
    cin, width = 64, 128
    for stage, count in enumerate(blocks):
        out.append(t + "nn.Sequential( # Sequential,")
        cout = width * 2
        for block in range(count):
            stride = 2 if block == 0 and stage > 0 else 1
            b, u = t * 2, t * 4
            out += [b + "nn.Sequential( # Sequential,", b + t + "LambdaMap(lambda x: x, # ConcatTable,",
                    u + "nn.Sequential( # Sequential,", u + t + "nn.Sequential( # Sequential,",
                    u + t * 2 + f"nn.Conv2d({cin},{width},(1, 1),(1, 1),(0, 0),1,1,bias=False),",
                    u + t * 2 + f"nn.BatchNorm2d({width}),", u + t * 2 + "nn.ReLU(),",
                    u + t * 2 + f"nn.Conv2d({width},{width},(3, 3),({stride}, {stride}),(1, 1),1,32,bias=False),",
                    u + t * 2 + f"nn.BatchNorm2d({width}),", u + t * 2 + "nn.ReLU(),", u + t + "),",
                    u + t + f"nn.Conv2d({width},{cout},(1, 1),(1, 1),(0, 0),1,1,bias=False),",
                    u + t + f"nn.BatchNorm2d({cout}),", u + "),"]
            if block == 0:
                out += [u + "nn.Sequential( # Sequential,",
                        u + t + f"nn.Conv2d({cin},{cout},(1, 1),({stride}, {stride}),(0, 0),1,1,bias=False),",
                        u + t + f"nn.BatchNorm2d({cout}),", u + "),"]
            else:
                out.append(u + "Lambda(lambda x: x), # Identity,")
            out += [b + t + "),", b + t + "LambdaReduce(lambda x,y: x+y), # CAddTable,", b + t + "nn.ReLU(),", b + "),"]
            cin = cout
        out.append(t + "),")
        width *= 2
    out += [t + "nn.AvgPool2d((7, 7),(1, 1)),", t + "Lambda(lambda x: x.view(x.size(0),-1)), # View,",
            t + "nn.Sequential(Lambda(lambda x: x.view(1,-1) if 1==len(x.size()) else x ),nn.Linear(2048,1000)), "
            "# Linear,", ")"]
    return "\n".join(out) + "\n"


def write(name: str, text: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / name
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


_MEASURE = """
import resource, subprocess, sys, time, os
started, before = time.perf_counter(), os.times()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - started
after = os.times()
cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
print(done.returncode, wall, cpu, peak, len(done.stdout))
sys.stdout.flush()
open(os.environ["BENCH_OUT"], "wb").write(done.stdout)
"""


def measure(path: Path, env: dict[str, str]) -> tuple[float, float, float, dict]:
    """(wall s, CPU s, peak RSS MB, JSON report) of one fresh ``modelcheck --static-only`` run,
    from a fresh measuring process: RUSAGE_CHILDREN's peak is then this run's alone."""
    out = CACHE / "report.json"
    argv = [str(BIN / "modelcheck"), "--static-only", "--format", "json", str(path)]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True,
                          env={**env, "BENCH_OUT": str(out)})
    status, wall, cpu, peak, _ = done.stdout.split()
    if int(status) not in (0, 1):
        sys.exit(f"modelcheck failed ({status}) on {path}: {done.stderr.strip()}")
    return float(wall), float(cpu), float(peak), json.loads(out.read_text())


def child_env(bytecode_cache: bool) -> dict[str, str]:
    """The measured processes' environment: with a bytecode cache of their own, or with none."""
    env = dict(os.environ)
    if not bytecode_cache:
        return {**env, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "PYTHONPYCACHEPREFIX": str(HERE / ".cache" / "pycache")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="cold runs on the Lua file (the median is kept)")
    parser.add_argument("--huge-runs", type=int, default=3, help="runs on the huge module (the median is kept)")
    parser.add_argument("--huge-functions", type=int, default=12, help="methods the 60,000 calls are spread over")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="compile modelcheck from source each run")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    env = child_env(not args.no_bytecode_cache)
    lua = write("resnext_101_32x4d_lua.py", lua_resnext())
    measure(lua, env)  # fills the bytecode cache (and the page cache) once

    huge = write(f"huge_{args.huge_functions}.py", huge_module(functions=args.huge_functions))
    runs = [measure(huge, env) for _ in range(max(args.huge_runs, 1))]
    wall, cpu, peak = (statistics.median(run[i] for run in runs) for i in range(3))
    report = runs[0][3]
    print(f"(a) huge module ({huge.stat().st_size / 1e6:.1f} MB, {HUGE_CALLS:,} calls in {args.huge_functions} "
          f"method(s)): median {wall:.2f} s wall (min {min(run[0] for run in runs):.2f}), {cpu:.2f} s CPU, "
          f"peak RSS {peak:.0f} MB (max {max(run[2] for run in runs):.0f}), "
          f"{report['summary']['findings']:,} findings")
    cold = [measure(lua, env) for _ in range(max(args.runs, 1))]
    lua_report = cold[0][3]
    walls = [run[0] for run in cold]
    print(f"(b) Lua-converted ResNeXt-101 ({lua.read_text().count(chr(10))} lines, "
          f"{lua_report['summary']['findings']} findings): median {statistics.median(walls):.3f} s wall "
          f"(min {min(walls):.3f}), median {statistics.median(run[1] for run in cold):.3f} s CPU, "
          f"peak RSS {max(run[2] for run in cold):.0f} MB")
    baseline = min(_bare_python() for _ in range(3))
    print(f"    bare python start-up {baseline:.3f} s")

    goals = [
        ("huge module at most 15 s", wall <= HUGE_GOAL_SECONDS, f"{wall:.2f} s wall ({cpu:.2f} s CPU)"),
        ("huge module at most 1 GB", max(run[2] for run in runs) <= HUGE_GOAL_MB,
         f"{max(run[2] for run in runs):.0f} MB"),
        ("Lua file at most 0.3 s cold", statistics.median(walls) <= LUA_GOAL_SECONDS,
         f"{statistics.median(walls):.3f} s median wall"),
    ]
    for name, met, value in goals:
        print(f"  goal {'met   ' if met else 'MISSED'} {name}: {value}")
    return 0 if all(met for _, met, _ in goals) else 1


def _bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
