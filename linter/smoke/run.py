"""The smoke test, parent side: one ``smoke`` child job per model, its outcome as stage results.

Never imports torch (the child, :mod:`modelcheck.smoke.job`, does the work). A job that crashes or
times out becomes stage results: the stages it finished keep their results, the one it was in
becomes ``crashed``/``timeout`` and the rest ``skipped``. Each bad stage then names the
findings that predicted it (each rule's ``predicts``); a bad stage that no finding predicted is a gap
in modelcheck's rules and is said so loudly.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelcheck.config import Config
from modelcheck.findings import Finding, Location, ModelResult, Report, StageResult
from modelcheck.models.specs import ModelSpec
from modelcheck.rules import FAMILIES, SIZE_DEPENDENT_CODES, codes_predicting
from modelcheck.smoke.second_size import STAGE as SECOND_SIZE
from modelcheck.targets import ARTIFACTS, Target, TargetSet
from modelcheck.text import read_json, write_json

DEFAULT_ARTIFACTS = Path(".modelcheck")
#: seconds the parent waits beyond the job's own budget before it kills the child
_GRACE = 5.0

@dataclass
class SmokeOutcome:
    """The stage results of one model plus what the child learned on the way."""

    stages: list[StageResult]
    artifacts: Path
    source_files: list[str] = field(default_factory=list)
    parameters: int | None = None
    info: dict[str, Any] = field(default_factory=dict)  # timings, peak memory of the child
    notes: list[str] = field(default_factory=list)


def artifact_name(model_name: str) -> str:
    """A folder name for a model spec: ``src/nets.py:UNet`` → ``nets.UNet``."""
    module, _, name = model_name.rpartition(":")
    stem = Path(module).stem if module.endswith(".py") else module
    text = f"{stem}.{name}" if stem else name
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "model"


def artifacts_for(model_name: str, artifacts: Path | None, many: bool) -> Path:
    """``--artifacts DIR`` holds one model's files directly; with several models, one folder each.

    Each target's files go into a folder of its own under that one (:func:`run_smoke`).
    """
    if artifacts is None:
        return DEFAULT_ARTIFACTS / artifact_name(model_name)
    return artifacts / artifact_name(model_name) if many else artifacts


def run_smoke(
    spec: ModelSpec,
    target: Target,
    config: Config,
    findings: Iterable[Finding],
    artifacts: Path,
    progress: Callable[[str], None] | None = None,
    runtime_home: Path | None = None,
    size_bound: str = "",
) -> SmokeOutcome:
    """Smoke-test one model for one target in a child job (in the target's own environment when it
    has one), its files in ``artifacts/<target>/``; every way the job can end becomes stage results.

    ``size_bound`` says why the export holds for the traced input size only where no finding says so
    (the unsafe fixes ``--fix`` kept): the second size is measured then too, and reported as a note,
    not a stage, since the user chose that export."""
    from modelcheck.runtimes.envs import EnvMissing, job_python

    artifacts = _target_folder(artifacts, target)
    name = spec.text
    requested = _size_dependent(spec, target, findings)
    try:
        python = job_python(target.profile, runtime_home)
    except EnvMissing as exc:
        result = SmokeOutcome(skipped_stages(name, str(exc), target), artifacts, notes=[f"{name}: {exc}"])
        _write_report(result, spec, target)
        return result
    payload = {
        "model": name,
        "spec": spec.to_json(),
        "target": {"name": target.name, "opset": target.opset, "exporter": target.exporter},
        "atol": config.atol,
        "rtol": config.rtol,
        "artifacts": str(artifacts),
        "budget": config.timeout,
        "runtime_home": str(runtime_home) if runtime_home else None,
        "second_size": requested or bool(size_bound),
    }
    result, ops = _run_child(payload, python, config.timeout, target, progress)
    result.stages = [replace(_with_prediction(stage, *ops.get(stage.name, (None, None)), name, result.source_files,
                                              findings, target.name), target=target.name)
                     for stage in result.stages]
    chosen = [] if requested else _chosen_size_notes(result, size_bound)
    result.notes = chosen + [
        f"{name} → {target.name}: the {stage.name} stage {stage.status} and no finding predicted it: a gap in "
        "modelcheck's rules (please report it with the model)"
        for stage in result.stages if stage.bad and not stage.predicted_by
    ]
    _write_report(result, spec, target)
    return result


def _size_dependent(spec: ModelSpec, target: Target, findings: Iterable[Finding]) -> bool:
    """Does a finding about this model at this target say its export holds for the traced size only?"""
    own = str(Path(spec.path).resolve()) if spec.path else None
    for f in findings:
        if f.code not in SIZE_DEPENDENT_CODES or (f.targets and target.name not in f.targets):
            continue
        if f.model == spec.text or (f.model is None and own and str(Path(f.location.path).resolve()) == own):
            return True
    return False


def _chosen_size_notes(result: SmokeOutcome, size_bound: str) -> list[str]:
    """Take the second-size stage a size-bound export chose out of ``result``'s stages, as notes."""
    measured = [stage for stage in result.stages if size_bound and stage.name == SECOND_SIZE]
    result.stages = [stage for stage in result.stages if stage not in measured]
    return [f"{stage.model} → {stage.target}: {size_bound}; at a second size it {stage.status}: {stage.detail}"
            for stage in measured]


def _target_folder(artifacts: Path, target: Target) -> Path:
    """``artifacts/<target>/``, created; a one-line PathError when it cannot be."""
    folder = (artifacts / target.name).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from modelcheck.static.run import PathError

        raise PathError(f"{folder}: cannot create the artifacts folder ({exc.strerror or exc})") from None
    return folder


def _run_child(payload: dict[str, Any], python: Path | None, timeout: float, target: Target,
               progress: Callable[[str], None] | None) -> tuple[SmokeOutcome, dict[str, tuple[Any, Any]]]:
    """The ``smoke`` job, watched; its stages (or what a crash or hang left) and each stage's op/node."""
    from modelcheck.jobs.run import run_job

    artifacts, name = Path(payload["artifacts"]), payload["model"]
    (artifacts / "report.json").unlink(missing_ok=True)
    watcher = _Watcher(artifacts / "report.json", f"{name} → {target.name}", progress) if progress else None
    try:
        outcome = run_job("smoke", payload, timeout=timeout + _GRACE, python=python)
    finally:
        if watcher:
            watcher.stop()
    if outcome.ok:
        value = outcome.value or {}
        ops = {data["name"]: (data.get("op"), data.get("node")) for data in value.get("stages", [])}
        info = {k: value.get(k) for k in ("timings", "max_rss_mb", "children_max_rss_mb", "input_names")}
        stages = [_stage(data) for data in value.get("stages", [])]
        return SmokeOutcome(stages, artifacts, value.get("source_files", []), value.get("parameters"), info), ops
    partial = read_json(artifacts / "report.json")
    ops = {data["name"]: (data.get("op"), data.get("node")) for data in partial.get("stages", [])}
    if outcome.status == "crashed" and outcome.traceback_tail.strip():
        (artifacts / "smoke.log").write_text(outcome.traceback_tail + "\n")
    return SmokeOutcome(_after_death(name, partial, outcome, target), artifacts), ops


def smoke_step(options: Any, report: Report, specs: list[ModelSpec], size_bound: dict[str, str] | None = None) -> None:
    """The pipeline's smoke step: each spec's stages, for every target, onto its ModelResult in ``report``.

    ``options`` is a ``pipeline.Options`` (its target or targets, config, artifacts and progress
    callback); ``size_bound`` maps a spec to why its export is bound to the traced size
    (:func:`run_smoke`). A model the dynamic pass could not import, build or run forward on, or that crashed
    or hung there, is not run again (the export runs that very forward): its stages are skipped
    with that reason, not reported as an unpredicted export failure.
    """
    many = len(specs) > 1
    progress = getattr(options, "progress", None)
    used: set[Path] = set()
    targets = options.target.members
    for spec in specs:
        folder = artifacts_for(spec.text, options.artifacts, many)
        while folder in used:  # a.py:Net and pkg/a.py:Net: one folder each
            folder = folder.with_name(folder.name + "_")
        used.add(folder)
        model = next((m for m in report.models if m.spec == spec.text), None)
        if model is None:
            model = ModelResult(spec=spec.text, status="ok")
            report.models.append(model)
        not_run = model.status == "failed" and model.stage in ("import", "build", "forward")
        if model.status in ("crashed", "timeout") or not_run:
            reason = f"not run: the dynamic pass {model.status} ({model.detail})"
            model.stages = [stage for target in targets for stage in skipped_stages(spec.text, reason, target)]
            continue
        model.stages = []
        for target in targets:
            outcome = run_smoke(spec, target, options.config, report.findings, folder, progress,
                                size_bound=(size_bound or {}).get(spec.text, ""))
            model.stages += outcome.stages
            report.notes.extend(outcome.notes)
            if model.parameters is None:
                model.parameters = outcome.parameters


def skipped_stages(model_name: str, reason: str, target: Target | TargetSet) -> list[StageResult]:
    """Every stage of every target skipped, e.g. when the dynamic pass could not build the model."""
    return [StageResult(model_name, name, "skipped", detail=reason, target=member.name)
            for member in target.members for name in member.profile.all_stages()]


def _stage(data: dict[str, Any]) -> StageResult:
    return StageResult.from_json(data)


def _after_death(model_name: str, partial: dict[str, Any], outcome: Any, target: Target) -> list[StageResult]:
    """Stage results for a job that crashed, hung or raised: from what its progress file says."""
    names = target.profile.all_stages()
    done = {data["name"]: _stage(data) for data in partial.get("stages", [])}
    running = [name for name in partial.get("running", []) if name not in done]
    if not running:  # died before the first stage began, or between two
        running = [next((name for name in names if name not in done), names[-1])]
    status = {"crashed": "crashed", "timeout": "timeout"}.get(outcome.status, "failed")
    detail = outcome.describe() if outcome.status != "error" else f"modelcheck smoke job: {outcome.error}"
    stages = []
    for name in names:
        if name in done:
            stages.append(done[name])
        elif name in running:
            stages.append(StageResult(model_name, name, status, round(outcome.seconds, 2), detail=detail))
        else:
            stages.append(StageResult(model_name, name, "skipped", detail=f"{running[0]} {status}"))
    return stages


def _findings_of(model_name: str, source_files: list[str], findings: Iterable[Finding]) -> list[Finding]:
    """Findings about this model: dynamic ones naming it, static ones in the files it comes from."""
    files = set(source_files)
    mine = []
    for finding in findings:
        if finding.model is not None:
            if finding.model == model_name:
                mine.append(finding)
            continue
        try:
            path = str(Path(finding.location.path).resolve())
        except OSError:
            continue
        if path in files:
            mine.append(finding)
    return sorted(mine, key=lambda f: (f.location.path, f.location.line, f.code))


def _with_prediction(stage: StageResult, op: str | None, node: str | None, model_name: str,
                     source_files: list[str], findings: Iterable[Finding], target: str = "") -> StageResult:
    """Name the findings that predicted a bad stage of ``target``, and the source line of a failure."""
    if not stage.bad:
        return stage
    mine = [f for f in _findings_of(model_name, source_files, findings)
            if not target or not f.targets or target in f.targets]
    codes = codes_predicting(stage.name, stage.status, target)  # each rule's own ``predicts``
    predicting = [f for f in mine if f.code in codes and f.severity.rank >= codes[f.code].rank]
    # what tracing saw in this very model wins over static findings elsewhere in its files (another
    # model's: a class in the same file this model never runs); then, "/up/Resize" being the node of
    # module "up", the finding about that module
    predicting = [f for f in predicting if f.model == model_name] or predicting
    if op and stage.name in _EXPORTS:  # an exporter names the construct it refused: only findings about it
        about = _codes_about(op)
        predicting = [f for f in predicting if not about or f.code in about]
    scope = ".".join(node.strip("/").split("/")[:-1]) if node else ""
    predicting.sort(key=lambda f: (f.model != model_name, not scope or f.module_path != scope,
                                   not (op and op in f.message)))
    location: Location | None = predicting[0].location if predicting else None
    if location is None and op:
        about_op = [f for f in mine if f.code in _codes_about(op)]
        location = about_op[0].location if about_op else None
    detail = stage.detail
    if location is not None:
        detail = f"{detail} (at {location.path}:{location.line})"
    return replace(stage, predicted_by=tuple(sorted({f.code for f in predicting})), location=location,
                   detail=detail)


#: the stages whose failure is an exporter refusing one construct it names (with free sizes, for the second)
_EXPORTS = frozenset({"export", SECOND_SIZE})


def _codes_about(op: str) -> frozenset[str]:
    """The codes of the rule families whose construct is the operator named in a runtime error."""
    return frozenset(code for family in FAMILIES if family.failing_ops and family.failing_ops.search(op)
                     for code in family.codes)


def _write_report(result: SmokeOutcome, spec: ModelSpec, target: Target) -> None:
    """``report.json`` next to the artifacts: the final stage results of this model."""
    files = [name for name in (*ARTIFACTS, "smoke.log") if (result.artifacts / name).exists()]
    data = {
        "model": spec.text,
        "target": target.name,
        "opset": target.opset,
        "exporter": target.exporter,
        "input_shape": list(spec.input_shape),
        "input_shapes": [list(shape) for shape in spec.input_shapes],
        **({"inputs": spec.inputs} if spec.inputs else {}),
        "forward_kwargs": {k: repr(v) for k, v in spec.forward_kwargs.items()},
        "dtype": spec.dtype,
        "parameters": result.parameters,
        "stages": [stage.to_json() for stage in result.stages],
        "artifacts": files,
        "notes": result.notes,
        **result.info,
    }
    # the artifacts folder may have vanished or be read-only: the run's report still has it all
    with contextlib.suppress(OSError):
        write_json(result.artifacts / "report.json", data)


class _Watcher:
    """Polls the child's progress file and reports the stages running now (for the CLI)."""

    def __init__(self, path: Path, model_name: str, progress: Callable[[str], None]) -> None:
        self.path, self.model_name, self.progress = path, Path(model_name).name, progress
        self.done = threading.Event()
        self.last = ""
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.progress(f"smoke test: starting ({self.model_name})")
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.3):
            running = read_json(self.path).get("running") or []
            text = f"smoke test: {', '.join(running)} ({self.model_name})" if running else ""
            if text and text != self.last:
                self.last = text
                self.progress(text)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
