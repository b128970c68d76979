"""Measuring the operator table, child side: export each probe, check it, run it, compare it.

Runs as the ``optable`` job (:mod:`modelcheck.ops.run` starts it in a fresh interpreter), because
an exporter or ONNX Runtime may crash on a probe: the parent then knows from ``current.json``
which cell was running and records it as crashed, and starts a new job for the rest. For each
(probe, target, opset) cell:

1. export with the TorchScript exporter (``dynamo=False``; caffe2: ``keep_initializers_as_inputs``)
   and record the ONNX op types the exporter emitted;
2. ``onnx.checker.check_model(full_check=True)``;
3. run it: ONNX Runtime (CPU) for the onnx target, in this process; for ort-mobile the file
   converted to the ORT format first, as that target's smoke test does; the real Caffe2 for the
   caffe2 target through :func:`modelcheck.runtimes.caffe2.run.run_onnx` (its own chroot process,
   about half a second, so several run on a thread pool while this thread exports the next cells);
4. compare with PyTorch eager: max abs diff, and that diff relative to the output's max ``|value|``.

A target that does not go through ONNX (ExecuTorch, LiteRT, ncnn, Core ML) is measured by its own
profile's ``export`` and ``run_file`` — the very functions its smoke test calls — in a job started
in that target's environment (:func:`measure_converted`); a target with no runtime here (Core ML)
is recorded as converted and not run.

Results go to ``done.jsonl`` in the job folder as they finish (one line per probe and per cell).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from modelcheck.smoke.job import flatten
from modelcheck.smoke.stages import ATOL as SMOKE_ATOL
from modelcheck.smoke.stages import RTOL as SMOKE_RTOL

#: a runtime's output matches PyTorch when max|got - expected| <= ATOL + RTOL * max|expected|: the smoke test's rule
ATOL, RTOL = SMOKE_ATOL, SMOKE_RTOL
#: float16 outputs: one float16 step (2**-10 of the value) is rounding, not a wrong result
ATOL16, RTOL16 = 1e-3, 2e-3

_EXPORT_OP = (re.compile(r"operator '?((?:aten|prim|torchvision)::\w+)"), re.compile(r"\b((?:aten|torchvision)::\w+)"),
              re.compile(r"export of operator (\w+)"), re.compile(r"export of (\w+) in opset"))
_ONNX_OP = (re.compile(r"\(ONNX op (\w+)\)"), re.compile(r'op_type:\s*"?(\w+)'), re.compile(r"Op \((\w+)\)"),
            re.compile(r"translate op (\w+)"), re.compile(r"of operator \((\w+)\)"))
_ORT_NODE = re.compile(r"[Nn]ode \(([^)]+)\)")
_C2_OP = re.compile(r"\(Caffe2 op (\w+)\)")
#: an aten operator as torch.export, ExecuTorch and the converters name it (``aten.grid_sampler_2d.default``)
_ATEN_NAMED = re.compile(r"\baten(?:::|\.)(\w+)")
ORT_MOBILE = "ort-mobile"
_NOISE = re.compile(r"\s*(?:\[Caused by the value|Please feel free to request support).*$")


def one_line(exc: BaseException) -> str:
    """``Type: first line`` of an error (exporter messages run to dozens of lines)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = _NOISE.sub("", lines[0]) if lines else ""
    return f"{type(exc).__name__}: {text}"[:400] if text else type(exc).__name__


class Recorder:
    """``current.json`` (the cell in progress, for the parent after a crash) and ``done.jsonl``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.cells = 0

    def current(self, key: str, target: str | None, opset: int | None, stage: str) -> None:
        data = json.dumps({"key": key, "target": target, "opset": opset, "stage": stage})
        tmp = self.folder / "current.tmp"
        tmp.write_text(data)
        tmp.replace(self.folder / "current.json")

    def write(self, record: dict[str, Any]) -> None:
        with self.lock, open(self.folder / "done.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
            self.cells += record["type"] == "cell"


# ------------------------------------------------------------------------------------ facts


def versions() -> dict[str, str]:
    """The versions a table was measured with (Caffe2's from its install marker)."""
    import onnx
    import onnxruntime
    import torch
    from modelcheck.runtimes.caffe2.run import runtime_status

    status = runtime_status()
    result = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
              "caffe2": status.version or f"not installed: {status.reason}"}
    with contextlib.suppress(ImportError):
        import torchvision

        result["torchvision"] = torchvision.__version__
    return result


def symbolic_registry() -> dict[str, list[int]]:
    """Every op the TorchScript exporter has a symbolic for → the opsets that define one.

    The catalogue of probes started from this; the table stores it so that a registered op no
    probe reaches shows up (``python -m modelcheck.ops --uncovered``).
    """
    import importlib
    import pkgutil

    import torch.onnx._internal.torchscript_exporter as exporter
    from torch.onnx._internal.torchscript_exporter import registration

    for module in pkgutil.iter_modules(exporter.__path__):
        if module.name.startswith("symbolic_opset"):
            importlib.import_module(f"{exporter.__name__}.{module.name}")
    with contextlib.suppress(ImportError):
        import torchvision.ops  # noqa: F401 - registers torchvision::nms, roi_align, roi_pool

    result: dict[str, list[int]] = {}
    for name in sorted(registration.registry.all_functions()):
        group = registration.registry.get_function_group(name)
        if group is not None and not name.startswith(("quantized::", "onnx::", "prim::")):
            result[name] = sorted(group._functions)
    return result


def traced_ops(model: Any, inputs: tuple[Any, ...]) -> list[str]:
    """The aten (and torchvision) ops tracing records: what the exporter's symbolics receive."""
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(model, inputs, check_trace=False).inlined_graph
    kinds = {node.kind() for node in graph.nodes()}
    return sorted(kind for kind in kinds if kind.startswith(("aten::", "torchvision::")))


# ----------------------------------------------------------------------------------- a cell


def export(model: Any, inputs: tuple[Any, ...], path: Path, target: str, opset: int) -> list[str]:
    """Export as the target does (TorchScript exporter; caffe2 keeps initializers as inputs); input names."""
    import torch

    names = [f"input_{i}" for i in range(len(inputs))]
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=opset,
                          keep_initializers_as_inputs=target == "caffe2", input_names=names,
                          do_constant_folding=True)
    return names


def graph_ops(path: Path) -> dict[str, str]:
    """node name → op type (``domain::Type`` outside the default domain) of an exported file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {node.name: (f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type)
            for node in model.graph.node}


def compare(got: list[Any], expected: list[Any]) -> dict[str, Any]:
    """``matches`` plus max abs diff and that diff relative to the output's max ``|value|``, by the
    smoke test's own rule (:func:`modelcheck.smoke.stages.comparison`), so that a cell says
    "mismatch" exactly where the smoke test would; float16 outputs get one float16 step of slack."""
    import numpy as np
    from modelcheck.smoke.stages import comparison

    half = any(np.asarray(e).dtype == np.float16 for e in expected)
    done = comparison(got, expected, *((ATOL16, RTOL16) if half else (ATOL, RTOL)))
    result: dict[str, Any] = {"matches": done.status == "passed", "max_abs_diff": done.max_abs,
                              "rel_diff": done.max_rel}
    if done.status != "passed":
        result["detail"] = done.detail
    return result


def _onnxruntime(path: Path, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1  # the Caffe2 workers run beside it on a shared 2-core machine
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in wanted})


def _ort_format(path: Path, folder: Path) -> Path:
    """The ort-mobile target's file: the ONNX export converted to the ORT format by ONNX Runtime's tool."""
    from modelcheck.targets.ort_mobile import convert

    converted = folder / "ort-mobile"
    converted.mkdir(exist_ok=True)
    return convert(path, converted)


def _ort_op(text: str, ops: dict[str, str]) -> str | None:
    """The ONNX op type an ONNX Runtime error names (directly or through the node's name)."""
    node = _ORT_NODE.search(text)
    if node and node.group(1) in ops:
        return ops[node.group(1)]
    return _first(_ONNX_OP, text)


def _caffe2_op(text: str, ops: dict[str, str]) -> str | None:
    """The ONNX op type a Caffe2 failure names; a Caffe2 op name is tied to the one ONNX op it can be."""
    named = _first(_ONNX_OP, text)
    if named:
        return named
    caffe2 = _C2_OP.search(text)
    if not caffe2:
        return None
    name = caffe2.group(1).lower()
    candidates = sorted({op for op in ops.values() if name in op.lower() or op.lower() in name})
    return candidates[0] if len(candidates) == 1 else None


#: op types that compute nothing a runtime could fail on by themselves
_INERT = frozenset({"Constant", "Identity"})


def _name_failed_op(cell: dict[str, Any], named: str | None, ops: dict[str, str]) -> None:
    """``failed_op``: the ONNX op type the error names, or else the graph's only op type that computes
    (a one-op probe); ``failed_op_from`` says which, so a rule knows how sure it is."""
    if named:
        cell.update(failed_op=named, failed_op_from="error")
        return
    computing = {op for op in ops.values() if op not in _INERT}
    if len(computing) == 1:
        cell.update(failed_op=computing.pop(), failed_op_from="graph")


def _name_quiet_failure(cell: dict[str, Any], ops: dict[str, str]) -> None:
    """``failed_op`` of a cell that ran: a mismatch (only a one-op graph names its op) or a checker
    error (which names the node's op type)."""
    if cell.get("matches") is False:
        _name_failed_op(cell, None, ops)
    elif cell.get("checks") is False:
        _name_failed_op(cell, _first(_ONNX_OP, cell.get("checker_error", "")), ops)


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> str | None:
    for pattern in patterns:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


# ------------------------------------------------------- a target with its own converter


def _converts(target: str) -> bool:
    """Is ``target`` measured by its own converter (its profile exports no ONNX)?"""
    from modelcheck.targets import PROFILES

    return not PROFILES[target].onnx


def measure_converted(key: str, target: str, model: Any, inputs: tuple[Any, ...], feeds: dict[str, Any],
                      expected: list[Any], aten: list[str], folder: Path, recorder: Recorder) -> None:
    """One cell of a non-ONNX target: its profile's ``export`` (the converter its smoke test runs),
    then its ``run_file`` on the result, compared with PyTorch; ``runs`` None where it has no runtime here."""
    from modelcheck.targets import PROFILES

    profile = PROFILES[target]
    cell: dict[str, Any] = {"type": "cell", "key": key, "target": target, "opset": 0}
    batches = sorted({int(x.shape[0]) for x in inputs if getattr(x, "dim", lambda: 0)() > 0})
    if profile.batchless and batches != [1]:  # its stage runs batch items one by one: not the operator
        cell.update(runs=None, run_error=f"not measured: {profile.runtime_label} has no batch axis and this "
                    f"probe's inputs have batch {', '.join(map(str, batches))}")
        recorder.write(cell)
        return
    recorder.current(key, target, 0, "export")
    started = time.monotonic()
    try:
        path = _convert(profile, model, inputs, folder / target)
    except Exception as exc:  # every converter raises its own kinds of errors
        cell.update(exports=False, export_error=one_line(exc), export_seconds=time.monotonic() - started)
        _name_aten_op(cell, str(exc), aten)
        recorder.write(cell)
        return
    cell.update(exports=True, export_seconds=time.monotonic() - started)
    recorder.current(key, target, 0, "run")
    started = time.monotonic()
    if profile.run_file is None:
        cell.update(runs=None, run_error=f"converted only: {profile.runtime_label} does not run here")
    else:
        try:
            got = profile.run_file(path, feeds)
        except Exception as exc:  # the runtime refuses an op, a shape or a dtype
            cell.update(runs=False, run_error=one_line(exc))
            _name_aten_op(cell, str(exc), aten)
        else:
            cell.update(runs=True, **compare(got, expected))
            if cell["matches"] is False:
                _name_aten_op(cell, "", aten)
    cell["run_seconds"] = time.monotonic() - started
    recorder.write(cell)


def _convert(profile: Any, model: Any, inputs: tuple[Any, ...], artifacts: Path) -> Path:
    """The profile's own ``export`` on a probe, its files in a folder of their own, its chatter muted."""
    import shutil

    from modelcheck.models.specs import ExampleInputs
    from modelcheck.smoke.stages import ExportContext

    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    names = [f"input_{i}" for i in range(len(inputs))]
    context = ExportContext(_flat(model, inputs, profile.batchless), ExampleInputs(inputs), names, artifacts,
                            {"name": profile.name, "opset": 0, "exporter": profile.exporters[0]})
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        return profile.export(context)


def _flat(model: Any, inputs: tuple[Any, ...], pin_batch: bool) -> Any:
    """The probe as its target's converter gets it: itself, wherever that can be.

    Nesting changes what ``torch.jit.trace`` records: the ``aten::Int`` of ``x.view(x.size(0), -1)``
    is traced at the top level only, and coremltools 9.0 fails on it with numpy 2.4. So a probe sits
    where such code sits in a model: a functional probe (user code, :class:`~modelcheck.ops.probes.Fn`)
    at the top level, a torch layer (``nn.LocalResponseNorm``, whose own forward does shape
    arithmetic) inside a wrapper, as a layer sits inside a model. Functional probes are wrapped
    only when they must be:

    - its output is not a tensor or a plain tuple of them: returned flattened, as the ONNX exporter
      flattens it (``torch.export`` refuses to serialize ``torch.return_types``: ``topk``);
    - ``pin_batch`` (a target whose tensors have no batch axis, :attr:`Profile.batchless`): each 4-d
      float input first goes through an identity 1×1 convolution (exact: ``x * 1 + 0``), so the
      probe is measured as an operator inside a model. pnnx infers the batch axis from the layers
      before an op; on an op applied to the model's input itself it guesses, and ``Softmax(dim=1)``
      there becomes ncnn's axis 1 (H) — measured, a hazard of its own the smoke test catches, but
      not the operator's.
    """
    import torch

    with torch.no_grad():
        out = model(*inputs)
    from modelcheck.ops.probes import Fn

    plain = isinstance(out, torch.Tensor) or (type(out) is tuple and all(isinstance(t, torch.Tensor) for t in out))
    if plain and not pin_batch and isinstance(model, Fn):
        return model

    class Flat(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner
            self.pins = torch.nn.ModuleList(_identity(x) if pin_batch else torch.nn.Identity() for x in inputs)

        def forward(self, *inputs: Any) -> tuple[Any, ...]:
            return tuple(flatten(self.inner(*(pin(x) for pin, x in zip(self.pins, inputs, strict=True)))))

    return Flat(model).eval()


def _identity(tensor: Any) -> Any:
    """A 1×1 convolution that returns a 4-d float input unchanged; ``nn.Identity`` for any other input."""
    import torch

    if not (isinstance(tensor, torch.Tensor) and tensor.dim() == 4 and tensor.is_floating_point()):
        return torch.nn.Identity()
    channels = tensor.shape[1]
    conv = torch.nn.Conv2d(channels, channels, 1).to(tensor.dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels, dtype=tensor.dtype).view(channels, channels, 1, 1))
        conv.bias.zero_()
    return conv


def _name_aten_op(cell: dict[str, Any], text: str, aten: list[str]) -> None:
    """``failed_op`` of a non-ONNX cell: the aten op its error names, else the probe's only aten op."""
    named = _ATEN_NAMED.search(text)
    if named:
        cell.update(failed_op=f"aten::{named.group(1)}", failed_op_from="error")
    elif len(aten) == 1:
        cell.update(failed_op=aten[0], failed_op_from="graph")


def env_versions(targets: list[str]) -> dict[str, str]:
    """What the targets measured in this environment ran on: ``{"coreml": "coremltools 9.0, torch 2.13.0, numpy
    2.4.6"}`` (numpy too: coremltools 9.0 converts shape arithmetic only with numpy < 2.4)."""
    from importlib import metadata

    from modelcheck.targets import PROFILES

    found = {}
    for target in targets:
        env = PROFILES[target].env
        if env is None:
            continue
        names = [env.version_of, *(r for r in env.requirements if r != env.version_of)]
        found[target] = ", ".join(f"{name} {metadata.version(name)}" for name in names)
    return found


# ------------------------------------------------------------------------------------ the job


def run(payload: dict[str, Any]) -> Any:
    """The ``optable`` job. ``{"action": "list"}``: probes, versions and the symbolic registry.
    ``{"action": "measure", "work": [[key, target, opset], ...], "folder": ..., "caffe2_timeout": s,
    "caffe2_workers": n, "caffe2_home": path | None}``: measure those cells into ``folder/done.jsonl``."""
    if payload.get("action") == "list":
        return {"probes": [p.meta() for p in _catalogue(payload)], "versions": versions(),
                "symbolics": symbolic_registry()}
    import torch

    torch.set_num_threads(1)
    folder = Path(payload["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(folder)
    by_key = {p.key: p for p in _catalogue(payload)}
    groups: dict[str, list[tuple[str, int]]] = {}
    for key, target, opset in payload["work"]:
        groups.setdefault(key, []).append((target, int(opset)))
    with ThreadPoolExecutor(max_workers=int(payload.get("caffe2_workers", 2))) as pool:
        for number, (key, cells) in enumerate(groups.items()):
            probe_dir = folder / f"probe-{number}"
            probe_dir.mkdir(exist_ok=True)
            _measure_probe(by_key.get(key), key, cells, probe_dir, recorder, pool, payload)
    return {"cells": recorder.cells, "versions": env_versions(sorted({t for c in groups.values() for t, _ in c}))}


def _catalogue(payload: dict[str, Any]) -> list[Any]:
    """modelcheck's probes, plus those of ``payload["extra_probes"]``: a Python file whose ``probes()``
    returns more :class:`~modelcheck.ops.probes.Probe` objects (an op of your own, a custom module)."""
    import importlib.util

    from modelcheck.ops.probes import all_probes

    probes = all_probes()
    if payload.get("extra_probes"):
        spec = importlib.util.spec_from_file_location("modelcheck_extra_probes", payload["extra_probes"])
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load probes from {payload['extra_probes']}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        known = {p.key for p in probes}
        probes += [p for p in module.probes() if p.key not in known]
    return probes


def _measure_probe(probe: Any, key: str, cells: list[tuple[str, int]], folder: Path, recorder: Recorder,
                   pool: ThreadPoolExecutor, payload: dict[str, Any]) -> None:
    """Build the probe, take PyTorch eager's answer, then measure each of its cells."""
    import torch
    from modelcheck.ops.probes import build, make_inputs

    recorder.current(key, None, None, "reference")
    try:
        if probe is None:
            raise KeyError(f"no probe {key!r} in this modelcheck")
        model, inputs = build(probe), make_inputs(probe)
        with torch.no_grad():
            expected = [t.detach().numpy() for t in flatten(model(*inputs))]
    except Exception as exc:  # a probe that cannot run eagerly measures nothing
        for target, opset in cells:
            recorder.write({"type": "cell", "key": key, "target": target, "opset": opset,
                            "probe_error": f"PyTorch eager: {one_line(exc)}"})
        return
    recorder.current(key, None, None, "trace")
    try:
        aten = traced_ops(model, inputs)
    except Exception:  # tracing is informative only; the exporter reports its own failure
        aten = []
    if payload.get("probe_records", True):  # a target environment's job leaves them to the main one
        recorder.write({"type": "probe", "key": key, "aten_ops": aten,
                        "outputs": [{"shape": list(e.shape), "dtype": str(e.dtype)} for e in expected]})
    feeds = {f"input_{i}": x.numpy() for i, x in enumerate(inputs)}
    for target, opset in cells:
        if _converts(target):
            measure_converted(key, target, model, inputs, feeds, expected, aten, folder, recorder)
        else:
            _measure_cell(key, target, opset, model, inputs, feeds, expected, folder, recorder, pool, payload)


def _measure_cell(key: str, target: str, opset: int, model: Any, inputs: tuple[Any, ...], feeds: dict[str, Any],
                  expected: list[Any], folder: Path, recorder: Recorder, pool: ThreadPoolExecutor,
                  payload: dict[str, Any]) -> None:
    """Export, check and run one cell; a Caffe2 run is handed to the pool and recorded when done."""
    import onnx

    cell: dict[str, Any] = {"type": "cell", "key": key, "target": target, "opset": opset}
    path = folder / f"{target}-{opset}.onnx"
    recorder.current(key, target, opset, "export")
    started = time.monotonic()
    try:
        export(model, inputs, path, target, opset)
    except Exception as exc:  # the exporter raises anything
        cell.update(exports=False, export_error=one_line(exc), export_seconds=time.monotonic() - started)
        aten = _first(_EXPORT_OP, str(exc))
        if aten:  # the exporter names the aten op it has no symbolic (or no variant) for
            cell.update(failed_op=aten if "::" in aten else f"aten::{aten}", failed_op_from="error")
        recorder.write(cell)
        return
    ops = graph_ops(path)
    cell.update(exports=True, onnx_ops=sorted(set(ops.values())), export_seconds=time.monotonic() - started)
    recorder.current(key, target, opset, "checker")
    try:
        onnx.checker.check_model(str(path), full_check=True)
        cell["checks"] = True
    except Exception as exc:  # checker and shape-inference errors
        cell.update(checks=False, checker_error=one_line(exc))
    if target == "caffe2":
        future = pool.submit(_run_caffe2, path, feeds, payload)
        future.add_done_callback(lambda done: _finish_caffe2(done, cell, ops, expected, recorder, path))
        return
    recorder.current(key, target, opset, "onnxruntime")
    started = time.monotonic()
    try:
        got = _onnxruntime(_ort_format(path, folder) if target == ORT_MOBILE else path, feeds)
    except Exception as exc:  # ORT raises for ops, types and shapes it cannot run
        cell.update(runs=False, run_error=one_line(exc))
        _name_failed_op(cell, _ort_op(str(exc), ops) or _first(_ONNX_OP, cell.get("checker_error", "")), ops)
    else:
        cell.update(runs=True, **compare(got, expected))
        _name_quiet_failure(cell, ops)
    cell["run_seconds"] = time.monotonic() - started
    recorder.write(cell)
    path.unlink(missing_ok=True)


def _run_caffe2(path: Path, feeds: dict[str, Any], payload: dict[str, Any]) -> Any:
    from modelcheck.runtimes.caffe2.run import run_onnx

    home = payload.get("caffe2_home")
    started = time.monotonic()
    result = run_onnx(path, feeds, None, float(payload.get("caffe2_timeout", 60.0)),
                      home=Path(home) if home else None)
    return result, time.monotonic() - started


def _finish_caffe2(done: Future[Any], cell: dict[str, Any], ops: dict[str, str], expected: list[Any],
                   recorder: Recorder, path: Path) -> None:
    """Record a Caffe2 cell (pool thread): its status, stage and error, or the comparison."""
    try:
        result, seconds = done.result()
        cell["run_seconds"] = seconds
        if result.status == "passed":
            cell.update(runs=True, **compare(result.outputs or [], expected))
            _name_quiet_failure(cell, ops)
        elif result.status == "skipped":
            cell.update(runs=None, run_error=result.detail)
        else:
            text = f"{result.detail}\n{result.stderr_tail}"
            cell.update(runs=False, run_status=result.status, run_stage=result.stage, run_error=result.detail)
            _name_failed_op(cell, _caffe2_op(result.detail, ops) or _caffe2_op(text, ops), ops)
    except Exception as exc:  # a bug of ours must still become a record
        cell.update(runs=None, run_error=f"modelcheck could not run Caffe2: {one_line(exc)}")
    recorder.write(cell)
    path.unlink(missing_ok=True)
