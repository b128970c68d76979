"""The ``ncnn`` target: Tencent's mobile inference engine, fed by pnnx, its PyTorch converter.

The export follows pnnx's documentation: trace the model with TorchScript, save ``model.pt``,
run ``pnnx model.pt inputshape=[1,3,224,224]``; pnnx writes ``model.ncnn.param`` and
``model.ncnn.bin`` (plus its own graph ``model.pnnx.param``/``.bin``, an ONNX file and two
generated scripts, all kept as artifacts). These are the steps of ``pnnx.export`` itself, with
the ``inputshape`` argument built by pnnx's own helpers, run here rather than through it because
``pnnx.export`` ignores the converter's exit status and log, and after converting it imports
the PyTorch script it generated, which is not valid Python for an ``nn.Sequential``
(``self.0 = ...``: a SyntaxError after a conversion that worked; measured, pnnx 20261020).

``fp16=0``: pnnx stores weights in fp16 by default, which puts a small conv net 1.3e-4 off at
scale 0.52 (above the comparison's tolerance of 2e-4 of scale); the runtime's fp16/bf16 storage
and arithmetic are switched off too, so the comparison is in fp32 (Tencent/ncnn#5771). An ncnn
``Mat`` has no batch axis: each batch item runs on its own, and each output is given back the
shape pnnx recorded for it in ``model.pnnx.param``.

Installed with ``modelcheck --install ncnn``: a virtual environment with torch, pnnx, ncnn and
numpy (:mod:`modelcheck.runtimes.envs`). Measured on this project's machine (2 cores, pip from a
local wheel mirror): 73 s and 1.1 GB, of which torch 754 MB and pnnx, ncnn, numpy and their
dependencies 190 MB; a second ``--install ncnn`` only checks the environment (6 s). ncnn, pnnx,
torch and numpy are imported inside the functions (they run in that environment), never at import.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelcheck.runtimes.envs import doctor_of, installer, status_of
from modelcheck.smoke.stages import ExportContext, Outcome, StageContext, run_compared
from modelcheck.targets import Profile, Stage, TargetEnv

NAME = "ncnn"
INSTALL = f"modelcheck --install {NAME}"
TORCHSCRIPT = "model.pt"
PARAM = "model.ncnn.param"
WEIGHTS = "model.ncnn.bin"
PNNX_PARAM = "model.pnnx.param"
LOG = "pnnx.log"
#: every file pnnx writes beside ``model.pt`` (its graph, an ONNX file, two generated scripts)
ARTIFACTS = (TORCHSCRIPT, PARAM, WEIGHTS, PNNX_PARAM, "model.pnnx.bin", "model.pnnx.onnx", "model_pnnx.py",
             "model_ncnn.py", LOG)
#: ncnn options that would store or compute in half precision (on ARM ncnn turns fp16 on by default)
_HALF_PRECISION = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage",
                   "use_bf16_packed")
_SHAPE = re.compile(r"#([^=\s]+)=\(([\d,]*)\)")


def export(ctx: ExportContext) -> Path:
    """TorchScript trace → ``model.pt`` → the ``pnnx`` converter with ``fp16=0``; the ``.param`` path.

    Raises with pnnx's own last error line when it fails (its whole log is kept in ``pnnx.log``).
    """
    import pnnx
    import torch
    from pnnx.utils.utils import generate_inputs_arg, get_shape_from_inputs, get_type_from_inputs

    folder = ctx.artifacts
    with ctx.inputs.bound(ctx.model) as tensors:
        traced = torch.jit.trace(ctx.model, tuple(tensors))
    traced.save(str(folder / TORCHSCRIPT))
    shapes = generate_inputs_arg(get_shape_from_inputs(tensors), get_type_from_inputs(tensors))
    done = subprocess.run([pnnx.EXEC_PATH, TORCHSCRIPT, f"inputshape={shapes}", "fp16=0"], cwd=folder,
                          capture_output=True, text=True, check=False)
    (folder / LOG).write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not (folder / PARAM).is_file() or not (folder / WEIGHTS).is_file():
        how = f"exit status {done.returncode}" if done.returncode >= 0 else f"killed by signal {-done.returncode}"
        raise RuntimeError(f"pnnx failed ({how}): {_last_error(done.stderr)} (log: {folder / LOG})")
    return folder / PARAM


def _last_error(log: str) -> str:
    """The line of pnnx's log that says what went wrong: its last error line, else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line or "what():" in line),
                lines[-1] if lines else "no output")


def run_file(path: Path, feeds: dict[str, Any]) -> list[Any]:
    """Run ``model.ncnn.param``/``.bin`` on ncnn in fp32, one batch item at a time; outputs in PyTorch's shapes.

    ``feeds`` are the model's inputs in forward's order, which pnnx names ``in0``, ``in1``, ...
    Raises with ncnn's own message when it cannot load the graph (a layer it does not have) or
    compute an output.
    """
    import ncnn
    import numpy as np

    net = ncnn.Net()
    for option in _HALF_PRECISION:
        setattr(net.opt, option, False)
    with _ncnn_log() as log:
        loaded = net.load_param(str(path)) == 0 and net.load_model(str(path.with_suffix(".bin"))) == 0
    if not loaded:
        raise RuntimeError(f"ncnn cannot load {path.name}: {'; '.join(log) or 'no message'}")
    inputs, outputs = _numbered(net.input_names()), _numbered(net.output_names())
    arrays = [np.asarray(value, dtype=np.float32) for value in feeds.values()]
    if len(inputs) != len(arrays):
        raise RuntimeError(f"the ncnn graph takes {len(inputs)} input(s), the model {len(arrays)}")
    batched = all(a.ndim >= 2 for a in arrays) and len({a.shape[0] for a in arrays}) == 1
    items = [[a[i] for a in arrays] for i in range(arrays[0].shape[0])] if batched else [arrays]
    results: list[list[Any]] = [[] for _ in outputs]
    for item in items:
        extractor = net.create_extractor()
        for name, array in zip(inputs, item, strict=True):
            extractor.input(name, ncnn.Mat(np.ascontiguousarray(array)).clone())
        for index, name in enumerate(outputs):
            with _ncnn_log() as log:
                status, mat = extractor.extract(name)
            if status != 0:
                raise RuntimeError(f"ncnn could not compute {name} (status {status}): {'; '.join(log) or 'no message'}")
            results[index].append(np.array(mat.numpy()))
    got = [np.stack(r) if batched else r[0] for r in results]
    return _with_shapes(got, output_shapes(path.with_name(PNNX_PARAM)))


def _numbered(names: list[str]) -> list[str]:
    """pnnx's blob names (``in0``, ``in10``, ``in2``) in the order of their numbers."""
    return sorted(names, key=lambda name: (int(re.sub(r"\D", "", name) or 0), name))


def output_shapes(pnnx_param: Path) -> list[tuple[int, ...]]:
    """The shape of each output as pnnx traced it, from its graph ``model.pnnx.param`` ([] without it).

    Operands carry their shapes (``#3=(1,8,8,8)f32``); a tuple output is a ``prim::TupleConstruct``
    of the outputs, in order.
    """
    try:
        lines = pnnx_param.read_text().splitlines()[2:]
    except OSError:
        return []
    shapes: dict[str, tuple[int, ...]] = {}
    tuples: dict[str, list[str]] = {}
    returned: list[str] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or not fields[2].isdigit() or not fields[3].isdigit():
            continue
        kind, count_in, count_out = fields[0], int(fields[2]), int(fields[3])
        operands = fields[4:4 + count_in + count_out]
        for name, dims in _SHAPE.findall(line):
            shapes[name] = tuple(int(d) for d in dims.split(",") if d)
        if kind in ("prim::TupleConstruct", "prim::ListConstruct") and count_out == 1:
            tuples[operands[-1]] = operands[:count_in]
        elif kind == "pnnx.Output":
            returned += operands[:count_in]

    def flat(name: str) -> list[str]:
        return [leaf for part in tuples[name] for leaf in flat(part)] if name in tuples else [name]

    names = [leaf for name in returned for leaf in flat(name)]
    return [shapes[name] for name in names] if all(name in shapes for name in names) else []


def _with_shapes(outputs: list[Any], shapes: list[tuple[int, ...]]) -> list[Any]:
    """Each output in the shape pnnx recorded when it holds as many values; else as ncnn gave it."""
    if len(shapes) != len(outputs):
        return outputs
    return [out.reshape(shape) if out.size == _size(shape) else out for out, shape in zip(outputs, shapes, strict=True)]


def _size(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


@contextlib.contextmanager
def _ncnn_log() -> Iterator[list[str]]:
    """What ncnn writes to stderr meanwhile (its only error channel: ``layer X not exists or registered``),
    as lines in the list yielded, filled when the block ends."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]


def run_ncnn(ctx: StageContext) -> Outcome:
    """The ``ncnn`` stage: the converted model on ncnn, compared with PyTorch eager."""
    return run_compared(ctx, NAME, run_file)


NCNN = Stage(NAME, "ncnn", run_ncnn)

PROFILE = Profile(
    name=NAME,
    runtime=NAME,
    runtime_label="ncnn",
    default_opset=0,
    stages=(NCNN,),
    status=status_of(NAME),
    doctor=doctor_of(NAME),
    install=installer(NAME),
    install_hint=INSTALL,
    repair_hint=f"{INSTALL} (it repairs a damaged install)",
    exporters=("pnnx",),
    onnx=False,
    export=export,
    export_label="TorchScript + pnnx",
    env=TargetEnv(("torch", "pnnx", "ncnn", "numpy"), ("torch", "pnnx", "ncnn", "numpy"), "ncnn"),
    run_file=run_file,
    batchless=True,
    artifacts=ARTIFACTS,
)
