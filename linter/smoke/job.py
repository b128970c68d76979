"""The smoke test, child side: export one model, check the ONNX file, run it, compare with PyTorch.

Runs as the ``smoke`` job in a child process (:mod:`modelcheck.jobs.run`), because it imports
and runs the user's model. For one model spec, in ``eval()`` mode with a fixed seed:

1. ``export``: ``torch.onnx.export`` with the target's settings (caffe2: TorchScript exporter,
   opset 9, initializers kept as inputs; onnx: the chosen opset and exporter);
2. ``onnx_check``: ``onnx.checker.check_model(full_check=True)`` and strict shape inference;
3. ``onnxruntime``: a CPU run compared with PyTorch eager (count, shapes, max abs/rel diff);
4. ``caffe2``: the real Caffe2 backend (:mod:`modelcheck.runtimes.caffe2.run`) converts the file to
   ``init_net.pb`` + ``predict_net.pb`` and runs them as a mobile predictor; compared likewise.

The Caffe2 conversion runs in its own process, so it starts right after the export and runs
while this process checks the file and runs ONNX Runtime: the smoke test then costs little more
than its slowest step. Progress goes to ``report.json`` in the artifacts folder after each step,
so the parent can tell which stage a crash or a timeout hit. Module import stays torch-free.
"""

from __future__ import annotations

import gc
import json
import os
import re
import resource
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcheck.findings import StageResult

STAGES = ("export", "onnx_check", "onnxruntime", "caffe2")
SEED = 0
#: the error text names the operator the exporter or a runtime failed on
_OP_PATTERNS = (
    re.compile(r"export of operator (\w+)"),
    re.compile(r"translate op (\w+)"),
    re.compile(r"node has kind '(?:aten|prim|onnx)::(\w+)'"),
    re.compile(r"Op \((\w+)\)"),
    re.compile(r'op_type: "(\w+)"'),
    re.compile(r"\baten::(\w+)"),
)
_NODE_PATTERNS = (re.compile(r'name: "([^"]+)"\s+op_type:'), re.compile(r"Node \(([^)]+)\)"))


@dataclass
class Outcome:
    """A stage's result plus what the parent needs to map it to source: the failing op/node."""

    stage: StageResult
    op: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.stage.to_json(), "op": self.op, "node": self.node}


class _Progress:
    """``report.json`` in the artifacts folder: finished stages and the ones running now."""

    def __init__(self, path: Path, model: str) -> None:
        self.path, self.model = path, model
        self.done: dict[str, Outcome] = {}
        self.running: set[str] = set()
        self.lock = threading.Lock()

    def start(self, name: str) -> None:
        with self.lock:
            self.running.add(name)
            self._write()

    def finish(self, outcome: Outcome) -> Outcome:
        with self.lock:
            self.running.discard(outcome.stage.name)
            self.done[outcome.stage.name] = outcome
            self._write()
        return outcome

    def _write(self) -> None:
        data = {
            "model": self.model,
            "status": "running",
            "running": sorted(self.running),
            "stages": [self.done[name].to_json() for name in STAGES if name in self.done],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


#: boilerplate the exporter appends to the one line worth showing
_NOISE = re.compile(r"\s*(?:\[Caused by the value|Please feel free to request support).*$")


def error_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (exporter messages run to dozens of lines)."""
    line = _NOISE.sub("", first_line(str(exc)))
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def failing_op(text: str) -> str | None:
    """The operator an exporter or runtime error names (``upsample_bilinear2d``, ``Resize``)."""
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def failing_node(text: str) -> str | None:
    """The ONNX node name an ONNX Runtime or Caffe2 error names (``/up/Resize``)."""
    for pattern in _NODE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


# ----------------------------------------------------------------------------- comparison


def compare(
    got: list[Any], expected: list[Any], atol: float, rtol: float
) -> tuple[str, float | None, float | None, str]:
    """(status, max_abs_diff, max_rel_diff, detail) of runtime outputs against PyTorch eager.

    Passes when every element satisfies ``|got - expected| <= atol + rtol * |expected|`` (numpy's
    ``allclose``), NaNs included only where PyTorch has them. The relative difference is taken
    over elements with ``|expected| > atol``, where it means something.
    """
    import numpy as np

    if len(got) != len(expected):
        return "mismatch", None, None, f"{len(got)} output(s), PyTorch has {len(expected)}"
    max_abs = max_rel = 0.0
    problems: list[str] = []
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            problems.append(f"output {index}: shape {_shape(a.shape)}, PyTorch {_shape(b.shape)}")
            continue
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        nan_a, nan_b = np.isnan(a64), np.isnan(b64)
        if (nan_a != nan_b).any():
            problems.append(f"output {index}: NaN at {int((nan_a != nan_b).sum())} element(s) where PyTorch has none")
        diff = np.abs(np.where(nan_a | nan_b, 0.0, a64 - b64))
        diff[np.isinf(a64) & (a64 == b64)] = 0.0
        abs_here = float(diff.max())
        scale = np.abs(b64)
        meaningful = scale > atol
        rel_here = float((diff[meaningful] / scale[meaningful]).max()) if meaningful.any() else 0.0
        max_abs, max_rel = max(max_abs, abs_here), max(max_rel, rel_here)
        bad = diff > atol + rtol * np.where(np.isfinite(scale), scale, 0.0)
        if bad.any():
            where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
            problems.append(
                f"output {index}: max abs diff {abs_here:.3g} at {list(where)} (got {a64[where]:.6g}, "
                f"PyTorch {b64[where]:.6g}); {int(bad.sum())} of {bad.size} elements beyond "
                f"atol {atol:g} + rtol {rtol:g}"
            )
    if problems:
        return "mismatch", max_abs, max_rel, "; ".join(problems)
    shapes = ", ".join(_shape(np.asarray(e).shape) for e in expected)
    return "passed", max_abs, max_rel, f"{len(expected)} output(s) {shapes} match PyTorch"


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in shape) or "scalar"


# ------------------------------------------------------------------------------ the job


def _flatten(value: Any) -> list[Any]:
    """Model outputs in the order the exporter flattens them (tuples, lists, dict values)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flatten(item)]
    return []


def _export(model: Any, inputs: Any, path: Path, target: dict[str, Any]) -> list[str]:
    """torch.onnx.export with the target's settings; returns the graph's input names.

    ``inputs`` is an :class:`~modelcheck.models.specs.ExampleInputs` (or a tuple of tensors): one graph
    input per tensor, named ``input`` when there is one, else after forward's parameters
    (``rgb``, ``depth``) or ``input_0``, ``input_1``…; arguments that are not tensors
    (``mode="test"``) are baked in as constants of the graph.
    """
    import torch
    from modelcheck.models.specs import ExampleInputs

    if not isinstance(inputs, ExampleInputs):
        inputs = ExampleInputs(inputs)
    names = inputs.names(model)
    with warnings.catch_warnings(), inputs.bound(model) as tensors:
        warnings.simplefilter("ignore")
        if target["exporter"] == "dynamo":
            torch.onnx.export(model, tensors, str(path), dynamo=True, opset_version=target["opset"],
                              input_names=names)
        else:
            torch.onnx.export(
                model, tensors, str(path), dynamo=False, opset_version=target["opset"],
                keep_initializers_as_inputs=target["name"] == "caffe2", input_names=names,
                do_constant_folding=True,
            )
    return names


def _onnx_check(path: Path) -> str:
    """The full checker, which includes strict shape inference; a short description of the graph.

    Checked by path: the checker reads the file in C++, three times faster on a 170 MB model
    than passing it a loaded proto (which is serialized again to cross into C++).
    """
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    ops = sorted({node.op_type for node in model.graph.node})
    text = f"{len(model.graph.node)} nodes ({opsets}; ir {model.ir_version}): {', '.join(ops[:12])}"
    return text + (" …" if len(ops) > 12 else "")


def _onnxruntime(path: Path, feeds: dict[str, Any], threads: int = 0) -> list[Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # initializers-as-inputs warnings are expected for caffe2
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    del session
    return outputs


def _caffe2_outcome(model: str, run: Any, expected: list[Any] | None, atol: float, rtol: float,
                    artifacts: Path) -> Outcome:
    """Turn a ``caffe2_runtime.Caffe2Run`` into the ``caffe2`` stage's result."""
    seconds = None
    if run.convert_seconds is not None or run.run_seconds is not None:
        seconds = (run.convert_seconds or 0.0) + (run.run_seconds or 0.0)
    if run.status == "skipped":
        return Outcome(StageResult(model, "caffe2", "skipped", detail=run.detail))
    if run.status != "passed" and run.stderr_tail.strip():
        (artifacts / "caffe2.log").write_text(run.stderr_tail + "\n")
    where = f"during {'conversion' if run.stage == 'convert' else 'the run'}"
    if run.status == "passed":
        if expected is None:
            return Outcome(StageResult(model, "caffe2", "skipped", seconds, detail="no PyTorch reference"))
        status, max_abs, max_rel, detail = compare(run.outputs or [], expected, atol, rtol)
        return Outcome(StageResult(model, "caffe2", status, seconds, max_abs, max_rel, detail))
    tail = run.stderr_tail or ""
    op, node = failing_op(tail) or failing_op(run.detail), failing_node(tail)
    if run.status == "failed":
        # Caffe2's own first line ("ONNX conversion failed, encountered 1 errors:") says little;
        # the "Exception: ..." line in its log names the operator.
        reason = next((line.split("Exception:", 1)[1].strip() for line in reversed(tail.splitlines())
                       if "Exception:" in line), "") or run.detail
        at = f" (ONNX node {node}, op {op})" if node and op else (f" (op {op})" if op else "")
        return Outcome(StageResult(model, "caffe2", "failed", seconds, detail=f"{where}: {reason}{at}"),
                       op, node)
    if run.status == "crashed":
        detail = run.detail + (f"; log: {artifacts / 'caffe2.log'}" if tail.strip() else "")
        return Outcome(StageResult(model, "caffe2", "crashed", seconds, detail=detail), op, node)
    return Outcome(StageResult(model, "caffe2", "timeout", seconds, detail=run.detail), op, node)


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``smoke`` job. Payload: ``model`` (display name), ``spec`` (``specs.ModelSpec.to_json()``),
    ``target`` {name, opset, exporter}, ``atol``, ``rtol``, ``artifacts`` (folder), ``budget``
    (seconds this job may take), ``caffe2_home`` (optional).

    Returns ``{"stages": [...], "source_files": [...], "input_shapes": [...], "input_names": [...], ...}``;
    never raises for the model's sake. Every input of the spec (``input_shapes`` or ``--inputs``)
    is a graph input, fed to ONNX Runtime and Caffe2 by name; every output is compared.
    """
    started = time.monotonic()
    deadline = started + float(payload.get("budget", 120.0))
    model_name: str = payload["model"]
    target: dict[str, Any] = payload["target"]
    atol, rtol = float(payload.get("atol", 1e-4)), float(payload.get("rtol", 1e-3))
    artifacts = Path(payload["artifacts"])
    artifacts.mkdir(parents=True, exist_ok=True)
    for stale in ("model.onnx", "model.onnx.data", "init_net.pb", "predict_net.pb", "caffe2.log"):
        (artifacts / stale).unlink(missing_ok=True)
    progress = _Progress(artifacts / "report.json", model_name)
    result: dict[str, Any] = {"source_files": [], "timings": {}}

    def skip_rest(after: str, reason: str) -> None:
        for name in STAGES[STAGES.index(after) + 1:]:
            if name not in progress.done:
                progress.finish(Outcome(StageResult(model_name, name, "skipped", detail=reason)))

    def finish() -> dict[str, Any]:
        result["stages"] = [progress.done[name].to_json() for name in STAGES if name in progress.done]
        result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["children_max_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result["timings"]["total"] = time.monotonic() - started
        return result

    # 1. build and export -------------------------------------------------------------------
    progress.start("export")
    import torch
    from modelcheck.models.specs import ModelSpec, build_model, make_inputs

    torch.manual_seed(SEED)
    try:
        t0 = time.monotonic()
        spec = ModelSpec.from_json(payload["spec"])
        model = build_model(spec)
        model.eval()
        result["timings"]["build"] = time.monotonic() - t0
        result["parameters"] = sum(p.numel() for p in model.parameters())
        result["source_files"] = _source_files(model)
    except Exception as exc:  # the user's constructor may raise anything
        progress.finish(Outcome(StageResult(model_name, "export", "failed",
                                            detail=f"cannot build the model: {error_line(exc)}")))
        skip_rest("export", "export failed")
        return finish()
    onnx_path = artifacts / "model.onnx"
    t0 = time.monotonic()
    try:
        inputs = make_inputs(spec, SEED, model)
        result["input_shapes"] = inputs.shapes()
        with torch.no_grad():
            input_names = _export(model, inputs, onnx_path, target)
    except Exception as exc:  # exporter and user forward raise anything
        text = str(exc)
        progress.finish(Outcome(
            StageResult(model_name, "export", "failed", time.monotonic() - t0, detail=error_line(exc)),
            op=failing_op(text),
        ))
        skip_rest("export", "export failed")
        return finish()
    export_seconds = time.monotonic() - t0
    result["timings"]["export"] = export_seconds
    progress.finish(Outcome(StageResult(
        model_name, "export", "passed", export_seconds,
        detail=(f"{target['exporter']} exporter, opset {target['opset']}"
                f"{_inputs_text(input_names, inputs)}: {onnx_path}"),
    )))
    result["input_names"] = input_names
    feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(input_names, inputs.tensors, strict=True)}

    # 4. Caffe2 starts now, in its own process, and runs while 2. and 3. run here -----------
    caffe2_run: list[Any] = []
    caffe2_thread = None
    threads = 0
    if target["name"] == "caffe2":
        progress.start("caffe2")
        caffe2_thread = threading.Thread(
            target=_run_caffe2, args=(onnx_path, feeds, artifacts, deadline, payload.get("caffe2_home"), caffe2_run),
            daemon=True,
        )
        caffe2_thread.start()
        # Caffe2 is the long pole: leave it a core while the checker, eager and ORT run here.
        threads = max(1, (os.cpu_count() or 1) - 1)
        torch.set_num_threads(threads)

    # 2. ONNX checks --------------------------------------------------------------------------
    progress.start("onnx_check")
    t0 = time.monotonic()
    try:
        detail = _onnx_check(onnx_path)
        check = Outcome(StageResult(model_name, "onnx_check", "passed", time.monotonic() - t0, detail=detail))
    except Exception as exc:  # checker errors carry the node in their text
        text = str(exc)
        check = Outcome(StageResult(model_name, "onnx_check", "failed", time.monotonic() - t0,
                                    detail=error_line(exc)), failing_op(text), failing_node(text))
    gc.collect()
    progress.finish(check)

    # PyTorch eager: the reference both runtimes are compared with ------------------------------
    expected: list[Any] | None = None
    reference_error = ""
    try:
        t0 = time.monotonic()
        with torch.no_grad():
            expected = [t.detach().cpu().numpy() for t in _flatten(inputs.call(model))]
        result["timings"]["eager"] = time.monotonic() - t0
    except Exception as exc:
        reference_error = f"PyTorch eager forward failed: {error_line(exc)}"
    del model
    gc.collect()

    # 3. ONNX Runtime ---------------------------------------------------------------------------
    if check.stage.status != "passed":
        progress.finish(Outcome(StageResult(model_name, "onnxruntime", "skipped", detail="onnx_check failed")))
    elif expected is None:
        progress.finish(Outcome(StageResult(model_name, "onnxruntime", "failed", detail=reference_error)))
    else:
        progress.start("onnxruntime")
        t0 = time.monotonic()
        try:
            got = _onnxruntime(onnx_path, feeds, threads if caffe2_thread else 0)
            seconds = time.monotonic() - t0
            status, max_abs, max_rel, detail = compare(got, expected, atol, rtol)
            progress.finish(Outcome(StageResult(model_name, "onnxruntime", status, seconds, max_abs, max_rel, detail)))
        except Exception as exc:  # ORT raises for ops or shapes it cannot run
            text = str(exc)
            progress.finish(Outcome(
                StageResult(model_name, "onnxruntime", "failed", time.monotonic() - t0, detail=error_line(exc)),
                failing_op(text), failing_node(text),
            ))
        gc.collect()

    # 4. Caffe2, collected --------------------------------------------------------------------
    if caffe2_thread is None:
        progress.finish(Outcome(StageResult(
            model_name, "caffe2", "skipped",
            detail=f"the {target['name']} target is checked with ONNX Runtime only",
        )))
    else:
        caffe2_thread.join(max(deadline - time.monotonic(), 0.0) + 5.0)
        if check.stage.status != "passed":
            outcome = Outcome(StageResult(model_name, "caffe2", "skipped", detail="onnx_check failed"))
        elif not caffe2_run:
            outcome = Outcome(StageResult(model_name, "caffe2", "timeout", detail="no Caffe2 result in time"))
        elif isinstance(caffe2_run[0], BaseException):
            outcome = Outcome(StageResult(model_name, "caffe2", "failed",
                                          detail=f"modelcheck could not run Caffe2: {error_line(caffe2_run[0])}"))
        elif expected is None and caffe2_run[0].status == "passed":
            outcome = Outcome(StageResult(model_name, "caffe2", "failed", detail=reference_error))
        else:
            outcome = _caffe2_outcome(model_name, caffe2_run[0], expected, atol, rtol, artifacts)
        progress.finish(outcome)
    return finish()


def _inputs_text(names: list[str], inputs: Any) -> str:
    """``, inputs rgb 1×3×64×64, depth 1×1×64×64`` when there are several inputs or constants."""
    constants = inputs.constants
    if len(names) <= 1 and not constants:
        return ""
    parts = [f"{name} {_shape(tuple(shape))}" for name, shape in zip(names, inputs.shapes(), strict=True)]
    parts += [f"{name}={value!r} (constant)" for name, value in constants.items()]
    return ", inputs " + ", ".join(parts)


def _run_caffe2(onnx_path: Path, feeds: dict[str, Any], artifacts: Path, deadline: float,
                home: str | None, out: list[Any]) -> None:
    """Thread body: convert and run on Caffe2 (a separate process), within the job's budget."""
    from modelcheck.runtimes.caffe2 import run as caffe2_runtime

    try:
        out.append(caffe2_runtime.run_onnx(
            onnx_path, feeds, artifacts, max(deadline - time.monotonic(), 1.0),
            home=Path(home) if home else None,
        ))
    except Exception as exc:  # a bug of ours must still become a result
        out.append(exc)


def _source_files(model: Any) -> list[str]:
    """Files defining the model's module classes (not torch's): where its findings live."""
    import inspect

    files: set[str] = set()
    for module in model.modules():
        cls = type(module)
        if cls.__module__.startswith("torch."):
            continue
        try:
            path = inspect.getsourcefile(cls)
        except (TypeError, OSError):
            continue
        if path:
            files.add(str(Path(path).resolve()))
    return sorted(files)

