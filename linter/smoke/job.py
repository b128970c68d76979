"""The smoke test, child side: export one model, then run the target's stages on the file.

Runs as the ``smoke`` job in a child process (:mod:`modelcheck.jobs.run`), because it imports
and runs the user's model. For one model spec, in ``eval()`` mode with a fixed seed:

- ``export``: ``torch.onnx.export`` with the target's settings (its profile's
  ``export_options``: caffe2 keeps initializers as inputs);
- then the stages of the target's profile (:mod:`modelcheck.targets`), e.g. ``onnx_check``,
  ``onnxruntime`` and ``caffe2``, each a function of a :class:`~modelcheck.smoke.stages.StageContext`
  that compares its runtime's outputs with PyTorch eager's.

A background stage (Caffe2, which converts in its own process) starts right after the export
and runs while the others run here: the smoke test then costs little more than its slowest
step. Progress goes to ``report.json`` in the artifacts folder after each step, so the parent
can tell which stage a crash or a timeout hit. Module import stays torch-free.
"""

from __future__ import annotations

import gc
import os
import resource
import shutil
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelcheck.findings import StageResult
from modelcheck.smoke import second_size
from modelcheck.smoke.stages import ATOL, RTOL, ExportContext, Outcome, StageContext, failing_op, shape_text
from modelcheck.targets import ARTIFACTS, MODEL_FILE, Profile, Stage, get_profile
from modelcheck.text import one_line, write_json

SEED = 0
#: seconds a background stage gets beyond the job's deadline before it counts as timed out
_JOIN_GRACE = 5.0


class _Progress:
    """``report.json`` in the artifacts folder: finished stages and the ones running now."""

    def __init__(self, path: Path, model: str, profile: Profile, extra: tuple[str, ...] = ()) -> None:
        self.path, self.model, self.target = path, model, profile.name
        self.names = (*profile.all_stages(), *extra)
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

    def skip_rest(self, reason: str) -> None:
        """Every stage without a result yet is ``skipped`` for ``reason``."""
        for name in self.names:
            if name not in self.done:
                self.finish(Outcome(StageResult(self.model, name, "skipped", detail=reason)))

    def stages(self) -> list[dict[str, Any]]:
        return [{**self.done[name].to_json(), "target": self.target} for name in self.names if name in self.done]

    def _write(self) -> None:
        write_json(self.path, {"model": self.model, "target": self.target, "status": "running",
                               "running": sorted(self.running), "stages": self.stages()})


@dataclass
class _Exported:
    """The export's yield: its file, the model (dropped once PyTorch's reference exists) and its inputs."""

    path: Path
    model: Any
    inputs: Any  # specs.ExampleInputs
    feeds: dict[str, Any]


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``smoke`` job. Payload: ``model`` (display name), ``spec`` (``specs.ModelSpec.to_json()``),
    ``target`` {name, opset, exporter}, ``atol``, ``rtol``, ``artifacts`` (folder), ``budget``
    (seconds this job may take), ``runtime_home`` (optional: where installed runtimes live).

    Returns ``{"stages": [...], "source_files": [...], "input_shapes": [...], "input_names": [...], ...}``;
    never raises for the model's sake. Every input of the spec (``input_shapes`` or ``--inputs``)
    is a graph input, fed to every runtime by name; every output is compared.
    """
    started = time.monotonic()
    profile = get_profile(payload["target"]["name"])
    artifacts = Path(payload["artifacts"])
    artifacts.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS:
        _remove(artifacts / stale)
    extra = (second_size.STAGE,) if _wants_second_size(payload, profile) else ()
    progress = _Progress(artifacts / "report.json", payload["model"], profile, extra)
    result: dict[str, Any] = {"source_files": [], "timings": {}}
    exported = _build_and_export(payload, profile, progress, result)
    if exported is None:
        progress.skip_rest("export failed")
    else:
        _run_stages(profile, _context(payload, exported, started), exported, progress, result, bool(extra))
    result["stages"] = progress.stages()
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["children_max_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["timings"]["total"] = time.monotonic() - started
    return result


def _remove(path: Path) -> None:
    """A file, or a folder a converter writes (Core ML's ``model.mlpackage``), left by an earlier run."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _context(payload: dict[str, Any], exported: _Exported, started: float) -> StageContext:
    """What the target's stages get: the exported file, its feeds, the tolerances and the budget left."""
    artifacts, home = Path(payload["artifacts"]), payload.get("runtime_home")
    return StageContext(
        payload["model"], payload["target"], exported.path, exported.feeds, artifacts,
        deadline=started + float(payload.get("budget", 120.0)), atol=float(payload.get("atol", ATOL)),
        rtol=float(payload.get("rtol", RTOL)), home=Path(home) if home else None,
    )


def _build_and_export(payload: dict[str, Any], profile: Profile, progress: _Progress,
                      result: dict[str, Any]) -> _Exported | None:
    """The ``export`` stage: build the model, make its inputs, export; None when that failed."""
    progress.start("export")
    import torch
    from modelcheck.models.specs import ModelSpec, build_model, make_inputs

    model_name, target = payload["model"], payload["target"]
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
                                            detail=f"cannot build the model: {one_line(exc)}")))
        return None
    artifacts = Path(payload["artifacts"])
    t0 = time.monotonic()
    try:
        inputs = make_inputs(spec, SEED, model)
        result["input_shapes"] = inputs.shapes()
        input_names = inputs.names(model)
        with torch.no_grad():
            path = _export_for(profile, ExportContext(model, inputs, input_names, artifacts, target))
    except Exception as exc:  # exporter and user forward raise anything
        seconds = time.monotonic() - t0
        progress.finish(Outcome(StageResult(model_name, "export", "failed", seconds, detail=one_line(exc)),
                                op=failing_op(str(exc))))
        return None
    result["timings"]["export"] = seconds = time.monotonic() - t0
    how = profile.export_label if not profile.onnx else f"{target['exporter']} exporter, opset {target['opset']}"
    progress.finish(Outcome(StageResult(
        model_name, "export", "passed", seconds, detail=f"{how}{_inputs_text(input_names, inputs)}: {path}",
    )))
    result["input_names"] = input_names
    feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(input_names, inputs.tensors, strict=True)}
    return _Exported(path, model, inputs, feeds)


def _export_for(profile: Profile, ctx: ExportContext) -> Path:
    """The target's own exporter, or torch.onnx.export with its settings; the file written."""
    if profile.export is not None:
        return profile.export(ctx)
    path = ctx.artifacts / MODEL_FILE
    onnx_export(ctx.model, ctx.inputs, path, ctx.target, profile.export_options)
    return path


def onnx_export(model: Any, inputs: Any, path: Path, target: dict[str, Any], options: Any = None) -> list[str]:
    """torch.onnx.export with the target's settings; returns the graph's input names.

    ``inputs`` is an :class:`~modelcheck.models.specs.ExampleInputs` (or a tuple of tensors): one graph
    input per tensor, named ``input`` when there is one, else after forward's parameters
    (``rgb``, ``depth``) or ``input_0``, ``input_1``…; arguments that are not tensors
    (``mode="test"``) are baked in as constants of the graph. ``options`` (the profile's
    ``export_options``) go to the TorchScript exporter.
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
            torch.onnx.export(model, tensors, str(path), dynamo=False, opset_version=target["opset"],
                              input_names=names, do_constant_folding=True, **dict(options or {}))
    return names


def _wants_second_size(payload: dict[str, Any], profile: Profile) -> bool:
    """A finding says the export is right for the traced size only, and ONNX Runtime can tell."""
    return bool(payload.get("second_size")) and profile.onnx and payload["target"]["exporter"] == "torchscript"


def _run_stages(profile: Profile, ctx: StageContext, exported: _Exported, progress: _Progress,
                result: dict[str, Any], resize: bool = False) -> None:
    """The profile's stages: background ones start first, then the others before and after the
    PyTorch reference, and the second size (``resize``) while the model lives; then the model goes
    and the background ones are collected."""
    background = [stage for stage in profile.stages if stage.background]
    if background:
        import torch

        # a background runtime is the long pole: leave it a core while the checker, eager and ORT run here
        ctx.threads = max(1, (os.cpu_count() or 1) - 1)
        torch.set_num_threads(ctx.threads)
    running = {stage.name: _start(stage, ctx, progress) for stage in background}
    for stage in profile.stages:
        if not stage.background and not stage.needs_reference:
            _run_here(stage, ctx, progress)
    _reference(ctx, exported, result)
    if resize:
        progress.start(second_size.STAGE)
        progress.finish(_second_size(ctx, exported, profile))
    exported.model = None
    gc.collect()
    for stage in profile.stages:
        if not stage.background and stage.needs_reference:
            _run_here(stage, ctx, progress)
    for stage in background:
        progress.finish(_collect(stage, ctx, progress, *running[stage.name]))


def _reference(ctx: StageContext, exported: _Exported, result: dict[str, Any]) -> None:
    """PyTorch eager on the same inputs, what every runtime is compared with; then the model goes."""
    import torch

    try:
        t0 = time.monotonic()
        with torch.no_grad():
            expected = [t.detach().cpu().numpy() for t in flatten(exported.inputs.call(exported.model))]
        result["timings"]["eager"] = time.monotonic() - t0
        ctx.set_reference(expected)
    except Exception as exc:
        ctx.set_reference(None, f"PyTorch eager forward failed: {one_line(exc)}")


def _second_size(ctx: StageContext, exported: _Exported, profile: Profile) -> Outcome:
    """The ``second_size`` stage (:mod:`modelcheck.smoke.second_size`); a bug of ours is a result too."""
    if ctx.reference() is None:
        return ctx.outcome(second_size.STAGE, "skipped", detail=ctx.reference_error)
    try:
        return second_size.run(ctx, exported.model, exported.inputs, dict(profile.export_options))
    except Exception as exc:
        return ctx.outcome(second_size.STAGE, "failed", detail=f"modelcheck could not run it: {one_line(exc)}")


def _blocked(stage: Stage, progress: _Progress) -> str | None:
    """``onnx_check failed`` when a stage this one needs did not pass."""
    for name in stage.after:
        done = progress.done.get(name)
        if done is not None and done.stage.status != "passed":
            return f"{name} failed"
    return None


def _call(stage: Stage, ctx: StageContext) -> Outcome:
    """The stage's function; an exception of its own (a bug of ours, not the model's) is a result too."""
    try:
        return stage.run(ctx)
    except Exception as exc:
        return ctx.outcome(stage.name, "failed", detail=f"modelcheck could not run {stage.label}: {one_line(exc)}")


def _run_here(stage: Stage, ctx: StageContext, progress: _Progress) -> None:
    """A stage in this thread: skipped when blocked, failed without a reference it needs, else run."""
    blocked = _blocked(stage, progress)
    if blocked:
        progress.finish(ctx.outcome(stage.name, "skipped", detail=blocked))
    elif stage.needs_reference and ctx.reference() is None:
        progress.finish(ctx.outcome(stage.name, "failed", detail=ctx.reference_error))
    else:
        progress.start(stage.name)
        progress.finish(_call(stage, ctx))
        gc.collect()


def _start(stage: Stage, ctx: StageContext, progress: _Progress) -> tuple[threading.Thread, list[Outcome]]:
    """A background stage, started now in a thread; its outcome lands in the returned list."""
    progress.start(stage.name)
    out: list[Outcome] = []
    thread = threading.Thread(target=lambda: out.append(_call(stage, ctx)), daemon=True)
    thread.start()
    return thread, out


def _collect(stage: Stage, ctx: StageContext, progress: _Progress, thread: threading.Thread,
             out: list[Outcome]) -> Outcome:
    """A background stage's outcome, waiting at most for the job's budget."""
    thread.join(max(ctx.deadline - time.monotonic(), 0.0) + _JOIN_GRACE)
    blocked = _blocked(stage, progress)
    if blocked:
        return ctx.outcome(stage.name, "skipped", detail=blocked)
    if not out:
        return ctx.outcome(stage.name, "timeout", detail=f"no {stage.label} result in time")
    return out[0]


def flatten(value: Any) -> list[Any]:
    """Model outputs in the order the exporter flattens them (tuples, lists, dict values)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flatten(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in flatten(item)]
    return []


def _inputs_text(names: list[str], inputs: Any) -> str:
    """``, inputs rgb 1×3×64×64, depth 1×1×64×64`` when there are several inputs or constants."""
    constants = inputs.constants
    if len(names) <= 1 and not constants:
        return ""
    parts = [f"{name} {shape_text(tuple(shape))}" for name, shape in zip(names, inputs.shapes(), strict=True)]
    parts += [f"{name}={value!r} (constant)" for name, value in constants.items()]
    return ", inputs " + ", ".join(parts)


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
