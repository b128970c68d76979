"""``modelcheck audit TARGET...``: a pre-export audit of every model in a third-party architecture.

TARGET is an installed package or module (``pytorchcv.models.enet``, ``torchvision.models``) or a
folder or file (a cloned R3Net-style repository). The audit

1. lists the model constructors in a child job (:func:`list_job`): factory functions and
   ``nn.Module`` classes that can be called without arguments once pretrained weights are
   switched off (``pretrained=False`` / ``weights=None`` where the signature has them), module-level
   model instances, or the models a ``[tool.modelcheck] models`` table in the folder lists. A
   module that fails to import, hangs or crashes while being listed becomes a row of its own.
   A class or factory that needs arguments takes them from the repository's own call sites
   (:mod:`modelcheck.models.callsites`, static: ``net = BASNet(3, 1)`` in basnet_test.py,
   ``Vgg(RCL_Module)`` in a demo script; test/infer/demo scripts first, then train scripts), with
   the literal arguments of that instance's first call (``net(img, 'test')``) bound to forward's
   parameter names; the row's notes say where they came from. ``--model``/``--model-args`` and
   ``[tool.modelcheck.models]`` still win;
2. keeps the root architectures: a candidate whose class is referenced from another candidate's
   class or function body (or passed to it at its call site), transitively, is a building block
   and is left out with a note, without building anything (:func:`_split_roots`); factories are
   entry points and always kept. ``--all-modules`` audits the blocks too; one whose forward needs
   several tensors modelcheck was not given is a ``skipped`` row ("needs 2 inputs (x, g)"), not a
   failure, and does not count as breaking;
3. runs one :func:`audit_model_job` per model, several at once (``--jobs``), each in its own
   child with a timeout and a memory cap. That job reuses the stages of ``modelcheck check``:
   the dynamic pass (:func:`modelcheck.trace.run.inspect_spec`: build, walk, pickle probe,
   trace), the static rules over the model's source files, and the smoke test
   (:func:`modelcheck.smoke.run.run_smoke`: export, then the target's stages, such as the ONNX
   checker, ONNX Runtime and Caffe2 for caffe2),
   offline: network access is blocked and reported (see ``worker._guard_network``). A model's
   findings (its verdict and the ``findings`` column) are the constructs *it* contains: what the
   dynamic pass saw, and static findings in code it ran while built or run (the inspect job
   records those functions, :class:`modelcheck.trace.job.ReachedCode`). Static findings in
   its files that it never reached are listed apart (``unreached``) and do not count;
4. caches each model's row by content hash (the spec, the options, the versions of torch, onnx
   and the target's runtime, and the hash of every source file the model was built from), so a
   re-run only redoes models whose code or settings changed;
5. prints one table (model × status × pickle × each stage of the target's smoke test × findings),
   or JSON (``version`` 2), or SARIF; while it runs, a progress bar on a terminal, one line per
   finished model in a pipe.

The parent never imports torch nor the audited code. Where tasks run is the business of an
:class:`Executor`: :class:`LocalExecutor` runs them as child processes of this machine; a task
is plain JSON in and out: :class:`modelcheck.audit.ray.RayExecutor` (``--executor ray``) runs
each one as a Ray task, inside the same isolation, on a cluster's nodes.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelcheck import __version__
from modelcheck.config import Config
from modelcheck.findings import Finding, StageResult
from modelcheck.jobs.run import ChildOutcome, run_job
from modelcheck.targets import Target, make_target, stage_order
from modelcheck.text import one_line
from modelcheck.text import read_json as _read_json

CACHE_FORMAT = 2  # 2: rows have unreached findings and may be skipped
#: what a cache entry must match besides the source files' hashes
_RUNTIME_PACKAGES = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnxscript", "numpy")
#: parameter names whose value asks for downloaded weights, and the value that switches them off
_WEIGHT_SWITCHES = re.compile(r"^(pretrained\w*|\w*_pretrained|weights|weights_\w+|\w+_weights)$", re.IGNORECASE)
_OOM = re.compile(r"MemoryError|bad_alloc|Cannot allocate memory|can't allocate memory|out of memory", re.IGNORECASE)
#: restarts of the listing job after a module hung or crashed it
_MAX_LIST_RESTARTS = 8
_GRACE = 60.0  # seconds beyond its stages' own timeouts before a model's job is killed


class AuditError(ValueError):
    """A TARGET or option the audit cannot use; the message is one line."""


# ============================================================================== plain data


@dataclass
class AuditOptions:
    """One audit's settings after config and flags are merged."""

    target: Target
    config: Config  # input_shape, timeout (per stage), atol, rtol
    jobs: int = 1
    memory_mb: int | None = None  # address-space cap of each model's processes
    smoke: bool = True
    match: str | None = None  # fnmatch pattern on the model's name (resnet*)
    cache_dir: Path | None = None  # None: no cache
    artifacts: Path = Path(".modelcheck/audit")
    model_specs: list[str] = field(default_factory=list)  # --model: audit exactly these
    model_args: dict[str, Any] = field(default_factory=dict)
    all_modules: bool = False  # --all-modules: audit the building blocks too, not only root architectures
    executor: str = "local"  # where model jobs run: "local" (child processes here) or "ray" (Ray tasks)
    ray_address: str | None = None  # --ray-address; None: RAY_ADDRESS, else a Ray runtime started here

    def task_options(self) -> dict[str, Any]:
        """What a model's job needs to know, as JSON (and the part of the cache key it is)."""
        return {
            "target": {"name": self.target.name, "opset": self.target.opset, "exporter": self.target.exporter},
            "input_shape": list(self.config.input_shape),
            "input_shapes": [list(shape) for shape in self.config.input_shapes],
            "inputs": self.config.inputs,
            "timeout": self.config.timeout,
            "atol": self.config.atol,
            "rtol": self.config.rtol,
            "smoke": self.smoke,
        }


@dataclass(frozen=True)
class AuditTask:
    """One model to audit: everything a worker anywhere needs, as JSON."""

    model: str  # the spec text, the row's name
    kind: str  # "factory" | "class" | "instance" | "listed"
    spec: dict[str, Any]  # modelcheck.models.specs.ModelSpec.to_json()
    options: dict[str, Any]
    artifacts: str
    key: str  # cache key: spec + options + versions (the source files are checked separately)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "spec": self.spec, "options": self.options,
                "artifacts": self.artifacts, "key": self.key}


@dataclass
class AuditRow:
    """The audit of one model (or of one module that could not be listed)."""

    model: str
    kind: str
    #: ok | build failed | forward failed | import error | network | timeout | crashed | out of memory | failed
    #: | skipped (its forward needs inputs modelcheck was not given: not the model's failure)
    status: str
    detail: str = ""
    parameters: int | None = None
    pickle: dict[str, Any] | None = None
    stages: list[StageResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # the constructs this model contains
    #: static findings in the model's files, in code the model never ran while built or run
    unreached: list[Finding] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_files: dict[str, str] = field(default_factory=dict)  # path → sha256
    seconds: float | None = None
    cached: bool = False

    def stage(self, name: str) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def bad(self) -> bool:
        """Would this model break on the way to the target? (Not known for a skipped one.)"""
        if self.status == "skipped":
            return False
        if self.status != "ok" or any(s.bad for s in self.stages):
            return True
        if self.pickle is not None and not self.pickle.get("ok", True):
            return True
        return any(f.severity.value == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "kind": self.kind, "status": self.status, "detail": self.detail,
            "parameters": self.parameters, "pickle": self.pickle,
            "stages": [s.to_json() for s in self.stages],
            "findings": [{**f.to_json(), "source_line": f.source_line} for f in self.findings],
            "unreached": [{**f.to_json(), "source_line": f.source_line} for f in self.unreached],
            "network": self.network, "notes": self.notes, "source_files": self.source_files,
            "seconds": self.seconds, "cached": self.cached,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRow:
        def findings(key: str) -> list[Finding]:
            return [Finding.from_json(item).with_(source_line=item.get("source_line")) for item in data.get(key, [])]

        return cls(
            model=data["model"], kind=data.get("kind", ""), status=data["status"], detail=data.get("detail", ""),
            parameters=data.get("parameters"), pickle=data.get("pickle"),
            stages=[StageResult.from_json(s) for s in data.get("stages", [])], findings=findings("findings"),
            unreached=findings("unreached"),
            network=list(data.get("network", [])), notes=list(data.get("notes", [])),
            source_files=dict(data.get("source_files", {})), seconds=data.get("seconds"),
            cached=bool(data.get("cached", False)),
        )


@dataclass
class AuditReport:
    """Every row of one audit, in a stable order, plus notes about the listing."""

    target: str
    profile: Target
    rows: list[AuditRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        statuses = Counter(row.status for row in self.rows)
        return {
            "version": 2,  # 2: per-model findings (``unreached`` apart), ``skipped`` rows
            "audit": self.target,
            "target": self.profile.name,
            "opset": self.profile.opset,
            "exporter": self.profile.exporter,
            "models": [row.to_json() for row in self.rows],
            "notes": self.notes,
            "summary": {
                "models": len(self.rows),
                "statuses": dict(sorted(statuses.items())),
                "breaking": sum(row.bad for row in self.rows),
                "skipped": statuses.get("skipped", 0),
                "cached": sum(row.cached for row in self.rows),
                "seconds": round(self.seconds, 2),
                "failures": sum(stage.bad for row in self.rows for stage in row.stages),
                "predicted": sum(stage.bad and bool(stage.predicted_by) for row in self.rows for stage in row.stages),
            },
        }


# ============================================================================== executors


class Executor(Protocol):
    """Runs audit tasks somewhere and yields each task's outcome as soon as it is known.

    A task is JSON (``AuditTask.to_json()``) for the ``audit_model`` job; an outcome is a
    :class:`modelcheck.jobs.run.ChildOutcome`, whose ``value`` is that job's JSON. Executors
    own where and how tasks run (processes here, machines elsewhere), nothing else.
    """

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[tuple[AuditTask, ChildOutcome]]: ...


@dataclass
class LocalExecutor:
    """Child processes on this machine, ``jobs`` at a time, each with a timeout and a memory cap.

    Threads only wait here: each task is a fresh ``python -m modelcheck.jobs.worker`` (which starts
    its stages' own children), so one model's hang, crash or OOM ends that task alone.
    """

    jobs: int = 1
    timeout: float = 300.0
    memory_mb: int | None = None

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[tuple[AuditTask, ChildOutcome]]:
        if not tasks:
            return
        with ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="audit") as pool:
            pending: dict[Future[ChildOutcome], AuditTask] = {}
            queue = list(tasks)
            while queue or pending:
                while queue and len(pending) < max(1, self.jobs):
                    task = queue.pop(0)
                    pending[pool.submit(self._one, task)] = task
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()

    def _one(self, task: AuditTask) -> ChildOutcome:
        return run_job("audit_model", task.to_json(), self.timeout, memory_limit_mb=self.memory_mb)


def make_executor(options: AuditOptions) -> Executor:
    """The executor ``options.executor`` names (see :mod:`modelcheck.audit.ray` for Ray's)."""
    if options.executor == "ray":
        from modelcheck.audit.ray import RayExecutor

        return RayExecutor(options.ray_address, model_timeout(options), options.memory_mb)
    if options.executor != "local":
        raise AuditError(f"unknown executor {options.executor!r} (local or ray)")
    return LocalExecutor(options.jobs, model_timeout(options), options.memory_mb)


# ============================================================================== the run


def run_audit(
    targets: Sequence[str],
    options: AuditOptions,
    executor: Executor | None = None,
    progress: Callable[[str, AuditRow | None, int, int], None] | None = None,
) -> AuditReport:
    """List the targets' models, audit each (from the cache where nothing changed), one report.

    ``progress(event, row, done, total)`` is called with "listing" first, "listed" once the models
    are known and "done" per model.
    """
    started = time.monotonic()
    report = AuditReport(" ".join(targets), options.target)
    if progress:
        progress("listing", None, 0, 0)
    tasks: list[AuditTask] = []
    for target_text in targets:
        more, rows, notes = plan(target_text, options)
        tasks.extend(task for task in more if task.key not in {t.key for t in tasks})
        report.notes.extend(notes)
        report.rows.extend(rows)
    versions = runtime_versions(options.target)
    total = len(tasks) + len(report.rows)  # models, and modules that could not be listed
    done = 0
    if progress:
        progress("listed", None, done, total)
        for row in report.rows:
            done += 1
            progress("done", row, done, total)
    todo: list[AuditTask] = []
    for task in tasks:
        cached = _cache_get(options.cache_dir, task, versions)
        if cached is None:
            todo.append(task)
            continue
        report.rows.append(cached)
        done += 1
        if progress:
            progress("done", cached, done, total)
    executor = executor or make_executor(options)
    for task, outcome in executor.run(todo):
        row = row_from_outcome(task, outcome)
        # a timeout may be the machine's load, not the model's; a lost job (a Ray worker or node died) the cluster's
        if row.status != "timeout" and outcome.status != "lost":
            _cache_put(options.cache_dir, task, versions, row)
        report.rows.append(row)
        done += 1
        if progress:
            progress("done", row, done, total)
    report.rows.sort(key=lambda row: row.model)
    report.seconds = time.monotonic() - started
    return report


def model_timeout(options: AuditOptions) -> float:
    """A model's job runs the trace and the smoke test, each within ``config.timeout``."""
    stages = 2 if options.smoke else 1
    return stages * (options.config.timeout + 10.0) + _GRACE


def row_from_outcome(task: AuditTask, outcome: ChildOutcome) -> AuditRow:
    """The row of one task, however its job ended."""
    if outcome.ok:
        row = AuditRow.from_json(outcome.value)
        row.seconds = round(outcome.seconds, 2)
        return row
    detail = outcome.describe()
    status = {"timeout": "timeout", "crashed": "crashed"}.get(outcome.status, "failed")
    if outcome.status != "lost" and _OOM.search(detail + outcome.traceback_tail):
        status = "out of memory"
    return AuditRow(task.model, task.kind, status, f"audit job: {detail}", seconds=round(outcome.seconds, 2))


# ============================================================================== listing


def plan(target_text: str, options: AuditOptions) -> tuple[list[AuditTask], list[AuditRow], list[str]]:
    """The tasks to run, rows for modules that could not be listed, and notes."""
    from modelcheck.models.specs import SpecError, specs_from_config

    notes: list[str] = []
    rows: list[AuditRow] = []
    path = Path(target_text)
    listed: list[tuple[dict[str, Any], str]] = []  # (ModelSpec json, kind)
    try:
        specs = specs_from_config(options.model_specs, options.model_args, options.config)
    except SpecError as exc:
        raise AuditError(str(exc)) from None
    if specs:
        listed = [(spec.to_json(), "listed") for spec in specs]
        notes.append(f"models: {len(specs)} listed in {'--model' if options.model_specs else 'pyproject.toml'}")
    elif path.exists():
        payload, file_notes = _files_payload(path, options.config)
        payload["repo"] = str(path.resolve() if path.is_dir() else path.resolve().parent)  # call sites
        notes.extend(file_notes)
        if payload["files"]:
            listed, rows, list_notes = _list(payload, options)
            notes.extend(list_notes)
    else:
        if not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", target_text):
            raise AuditError(f"{target_text}: neither a folder, a Python file nor an importable module name")
        listed, rows, list_notes = _list({"modules": [target_text]}, options)
        notes.extend(list_notes)
    if options.match:
        listed = [(spec, kind) for spec, kind in listed if fnmatch.fnmatch(spec["name"], options.match)
                  or fnmatch.fnmatch(spec["text"], options.match)]
    task_options = options.task_options()
    tasks = []
    for spec, kind in listed:
        if kind != "listed":  # the run's shapes and --inputs; a listed spec has its own
            spec = {**spec, **{key: task_options[key] for key in ("input_shape", "input_shapes", "inputs")}}
        key = _digest({"spec": spec, "options": task_options, "format": CACHE_FORMAT})
        artifacts = options.artifacts / _artifact_name(spec["text"])
        tasks.append(AuditTask(spec["text"], kind, spec, task_options, str(artifacts.resolve()), key))
    if not tasks and not rows:
        notes.append("models: no model constructor found (name them with --model file.py:Name)")
    return tasks, rows, notes


def _artifact_name(model: str) -> str:
    from modelcheck.smoke.run import artifact_name

    return artifact_name(model)


def _files_payload(path: Path, config: Config) -> tuple[dict[str, Any], list[str]]:
    """The files of a folder (or one file) that may be imported to look for models."""
    from modelcheck.models.specs import discovery_files
    from modelcheck.static.run import discover, read_source

    files, notes = discover([path], config)
    sources = {}
    for file in files:
        text, why = read_source(file)
        if text is None:
            notes.append(why or f"{file}: skipped")
        else:
            sources[str(file)] = text
    importable, file_notes = discovery_files(sources)
    return {"files": importable}, notes + file_notes


Listed = list[tuple[dict[str, Any], str]]  # (ModelSpec JSON, kind) of each model found


def _list(payload: dict[str, Any], options: AuditOptions) -> tuple[Listed, list[AuditRow], list[str]]:
    """Run the listing job; a module that hangs or crashes it is skipped and the job rerun."""
    rows: list[AuditRow] = []
    notes: list[str] = []
    skip: list[str] = []
    for _ in range(_MAX_LIST_RESTARTS + 1):
        with tempfile.TemporaryDirectory(prefix="modelcheck-audit-list-") as tmp:
            progress = Path(tmp) / "progress.json"
            job = {**payload, "skip": skip, "progress": str(progress), "all_modules": options.all_modules}
            outcome = run_job("audit_list", job, options.config.timeout, memory_limit_mb=options.memory_mb,
                              env=offline_env(Path(tmp)))
            current = _read_json(progress).get("importing")
        if outcome.ok:
            value = outcome.value
            for error in value["errors"]:
                rows.append(AuditRow(error["module"], "module", _import_status(error["error"]), error["error"]))
            for skipped in value["skipped"]:
                notes.append(f"models: skipped {skipped['spec']}: {skipped['reason']}")
            if value.get("left_out"):
                notes.append(left_out_note(value["left_out"]))
            return [(item["spec"], item["kind"]) for item in value["picked"]], rows, notes
        if not current or current in skip:
            raise AuditError(f"listing the models of {payload.get('modules') or list(payload['files'])} "
                             f"failed: {outcome.describe() or outcome.error}")
        skip.append(current)
        status = {"timeout": "timeout", "crashed": "crashed"}.get(outcome.status, "import error")
        rows.append(AuditRow(current, "module", status, f"while importing it: {outcome.describe()}"))
    raise AuditError(f"listing the models failed: more than {_MAX_LIST_RESTARTS} modules hung or crashed")


def left_out_note(left_out: list[dict[str, Any]]) -> str:
    """``left out 10 building blocks (parts of R3Net, BASNet): A, B, ... -- --all-modules to audit them``."""
    roots = list(dict.fromkeys(root for item in left_out for root in item.get("parts_of") or []))
    names = list(dict.fromkeys(item["name"] for item in left_out))
    shown = ", ".join(names[:12]) + (f", and {len(names) - 12} more" if len(names) > 12 else "")
    plural = "building block" if len(left_out) == 1 else "building blocks"
    return (f"models: left out {len(left_out)} {plural} (parts of {', '.join(roots) or 'each other'}): {shown}"
            " — --all-modules to audit them")


def _import_status(error: str) -> str:
    if _OOM.search(error):
        return "out of memory"
    return "network" if "network access to" in error else "import error"


def offline_env(scratch: Path) -> dict[str, str]:
    """No downloads: hubs offline, an empty torch cache, and the socket guard's log file."""
    torch_home = scratch / "torch-home"
    torch_home.mkdir(parents=True, exist_ok=True)
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TORCH_HOME": str(torch_home),
        "MODELCHECK_NO_NETWORK": str(scratch / "network.log"),
    }


# ----- child side: the listing job -----------------------------------------------------------


def offline_kwargs(fn: Any) -> dict[str, Any]:
    """Arguments that switch pretrained weights off: ``pretrained=False``, ``weights=None``.

    A boolean default is answered with False, anything else (``pretrained='imagenet'``, a
    weights enum) with None, which every zoo seen reads as "no weights".
    """
    import inspect

    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    kwargs: dict[str, Any] = {}
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) or not _WEIGHT_SWITCHES.match(p.name):
            continue
        if p.default is p.empty or p.default in (None, False):
            if p.default is p.empty:
                kwargs[p.name] = None if p.name.lower().startswith("weights") else False
            continue
        kwargs[p.name] = False if isinstance(p.default, bool) else None
    return kwargs


def list_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job: the model constructors in ``payload["modules"]`` (packages walked) or ``["files"]``.

    Imports modules one at a time, writing the one being imported to ``payload["progress"]``, so
    the parent can tell which module hung or crashed the job. Builds nothing: every model is
    built in its own job later. A class or factory that needs arguments gets them from the
    repository's own call sites when ``payload["repo"]`` names its folder
    (:mod:`modelcheck.models.callsites`, static). Then only root architectures are picked
    (:func:`_split_roots`); the building blocks are returned as ``left_out`` unless
    ``payload["all_modules"]``.
    """
    listing = _Listing(payload)
    for display, file in (payload.get("files") or {}).items():
        listing.list_file(display, file)
    for root in payload.get("modules") or []:
        listing.list_package(root)
    listing.importing("")
    return {**_split_roots(listing.entries, listing.project, bool(payload.get("all_modules"))),
            "errors": listing.errors}


class _Listing:
    """The listing job's state: modules imported one at a time (each announced in the progress
    file first), the candidates found in them, and the modules that failed to import."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.skip = set(payload.get("skip", []))
        self.progress = Path(payload["progress"])
        self.entries: list[dict[str, Any]] = []
        self.errors: list[dict[str, str]] = []
        self.seen: set[int] = set()
        self.project: set[str] = set()  # the modules listed: helpers in them are followed for parthood
        self.sites = _Sites(payload.get("repo"))

    def importing(self, name: str) -> None:
        self.progress.write_text(json.dumps({"importing": name}))

    def imported(self, label: str, load: Callable[[], Any]) -> Any:
        """The module ``load`` imports, or None (skipped, or its error recorded)."""
        if label in self.skip:
            return None
        self.importing(label)
        try:
            module = load()
        except BaseException as exc:  # user code may raise anything at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.errors.append({"module": label, "error": one_line(exc)})
            return None
        self.project.add(module.__name__)
        return module

    def list_file(self, display: str, file: str) -> None:
        from modelcheck.models.specs import ModelSpec, load_module

        module = self.imported(display, lambda: load_module(
            ModelSpec(f"{display}:_", "_", path=str(Path(file).resolve()))))
        if module is not None:
            _candidates(module, lambda name: {"path": display, "module": None, "text": f"{display}:{name}"},
                        self.entries, self.seen, self.sites)

    def list_package(self, root: str) -> None:
        """A module, or a package and every module under it."""
        import importlib
        import pkgutil

        from modelcheck.models import building
        from modelcheck.models.specs import ModelSpec

        building.install(ModelSpec(f"{root}:_", "_", module=root))  # as load_module does for files
        module = self.imported(root, lambda: importlib.import_module(root))
        if module is None:
            return
        names = [root]
        if hasattr(module, "__path__"):
            names += sorted(info.name for info in pkgutil.walk_packages(module.__path__, prefix=root + ".",
                                                                         onerror=lambda name: None))
        for name in names:
            sub = module if name == root else self.imported(name, lambda name=name: importlib.import_module(name))
            if sub is not None:
                _candidates(sub, lambda attr, n=name: {"path": None, "module": n, "text": f"{n}:{attr}"},
                            self.entries, self.seen, self.sites)


class _Sites:
    """The repository's call sites (:class:`modelcheck.models.callsites.RepoIndex`), read on first use."""

    def __init__(self, repo: str | None) -> None:
        self.repo = repo
        self._index: Any = None

    def find(self, file: str | None, name: str) -> list[Any]:
        if not self.repo or not file:
            return []
        if self._index is None:
            from modelcheck.models.callsites import RepoIndex

            self._index = RepoIndex(self.repo)
        try:
            return self._index.call_sites(file, name)
        except (OSError, RecursionError, ValueError):
            return []


def _candidates(module: Any, where: Callable[[str], dict[str, Any]], entries: list[dict[str, Any]],
                seen: set[int], sites: _Sites) -> None:
    """Public factories, classes and instances defined in ``module``, and whether each can be built
    offline (``reason`` None) -- with arguments from a call site where it needs some."""
    import functools
    import inspect

    import torch.nn as nn
    from modelcheck.models.specs import class_verdict, factory_verdict

    module_classes = {n: v for n, v in vars(module).items() if isinstance(v, type)}
    for name, obj in list(vars(module).items()):
        if name.startswith("_") or id(obj) in seen:
            continue
        kind = None
        verdict: str | None = None
        kwargs: dict[str, Any] = {}
        if isinstance(obj, nn.Module):
            kind = "instance"
        elif isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
            kind, kwargs = "class", offline_kwargs(obj)
            verdict = class_verdict(obj)
        elif inspect.isfunction(obj) and obj.__module__ == module.__name__ and obj.__name__ != "<lambda>":
            kind, kwargs = "factory", offline_kwargs(obj)
            candidate = obj
            if kwargs:  # the verdict then sees the weights switched off
                candidate = functools.partial(obj, **kwargs)
                candidate.__name__ = obj.__name__  # type: ignore[attr-defined]
            verdict = factory_verdict(candidate, module_classes)
        if kind is None:
            continue
        seen.add(id(obj))
        file = getattr(module, "__file__", None)
        entry = {"place": where(name), "name": name, "kind": kind, "obj": obj, "reason": verdict, "kwargs": kwargs,
                 "args": [], "forward_kwargs": {}, "site": None, "file": str(Path(file).resolve()) if file else None}
        if verdict is not None and verdict.startswith("needs argument(s)"):
            _with_call_site(entry, sites.find(entry["file"], name), module_classes)
        elif verdict is None and kind != "instance":
            _with_forward_call(entry, sites.find(entry["file"], name))
        entries.append(entry)


def _with_forward_call(entry: dict[str, Any], sites: list[Any]) -> None:
    """A model built without arguments still takes forward's non-tensor values from the repo's
    own call of it (``self.net(x, mode=1)``)."""
    from modelcheck.models.callsites import forward_call

    found = forward_call(entry["obj"], sites)
    if found is not None:
        entry["forward_kwargs"], entry["forward_origin"] = found


def _with_call_site(entry: dict[str, Any], sites: list[Any], module_classes: dict[str, type]) -> None:
    """Take the first call site whose arguments fit the signature (and, for a factory, that passes
    :func:`~modelcheck.models.specs.factory_verdict` with them); the weight switches stay off."""
    import functools

    from modelcheck.models.callsites import fitting_call
    from modelcheck.models.specs import factory_verdict

    obj = entry["obj"]
    call = fitting_call(obj, sites, entry["kwargs"])
    if call is None:
        return
    if entry["kind"] == "factory":
        candidate = functools.partial(obj, *call["args"], **call["kwargs"])
        candidate.__name__ = obj.__name__  # type: ignore[attr-defined]
        if factory_verdict(candidate, module_classes) is not None:
            return  # called with arguments somewhere, but not a model factory
    entry.update(reason=None, args=call["args"], kwargs=call["kwargs"], forward_kwargs=call["forward_kwargs"],
                 site=call["site"])


def _split_roots(entries: list[dict[str, Any]], project: set[str], all_modules: bool) -> dict[str, Any]:
    """Picked models, skipped ones with the reason, and the building blocks left out.

    Parthood is decided without building anything (real backbones take seconds to build): a
    candidate X is a part of candidate Y when Y's class body or function body references X --
    a name or ``module.attr`` chain resolved through Y's module globals, followed through the
    project's other functions and classes (``resnet50()`` → ``_resnet()`` → ``ResNet(Bottleneck,
    ...)``), or X passed to Y at the call site Y is built from (``Vgg(RCL_Module)``) --
    transitively. X is left out when some Y reaches it and it does not reach Y back (mutual
    references keep both). Factories are entry points and never left out; candidates that are
    neither buildable nor only short of arguments (no forward, abstract) are not considered.
    """
    nodes = [i for i, e in enumerate(entries)
             if e["reason"] is None or e["reason"].startswith("needs argument(s)")]
    children = _direct_parts(entries, nodes, project)
    reach = {i: _reachable(i, children) for i in nodes}
    part_of = {i: [j for j in nodes if i in reach[j] and j not in reach[i]] for i in nodes
               if entries[i]["kind"] != "factory"}
    return _pick(entries, part_of, all_modules)


def _direct_parts(entries: list[dict[str, Any]], nodes: list[int], project: set[str]) -> dict[int, set[int]]:
    """Each candidate → the candidates its definition or its call site names (its base classes not)."""
    by_id = {id(entries[i]["obj"]): i for i in nodes}
    by_place = {f"{entries[i]['file']}:{entries[i]['name']}": i for i in nodes if entries[i]["file"]}
    memo: dict[int, list[Any]] = {}
    children: dict[int, set[int]] = {}
    for i in nodes:
        found = {by_place[ref] for ref in _refs_in(entries[i].get("site") or {}) if ref in by_place}
        found |= _candidates_named(entries[i]["obj"], by_id, project, memo)
        found.discard(i)
        whole = entries[i]["obj"]
        if isinstance(whole, type):  # a base class (``class NetLarge(Net)``) is not a part of its subclass
            found = {j for j in found
                     if not (isinstance(entries[j]["obj"], type) and issubclass(whole, entries[j]["obj"]))}
        children[i] = found
    return children


def _candidates_named(obj: Any, by_id: dict[int, int], project: set[str], memo: dict[int, list[Any]]) -> set[int]:
    """The candidates (by index) ``obj``'s definition names, followed through the project's other
    functions and classes but not through a candidate."""
    found: set[int] = set()
    stack, visited = list(_references(obj, memo)), set()
    while stack:
        ref = stack.pop()
        if id(ref) in visited:
            continue
        visited.add(id(ref))
        if id(ref) in by_id:
            found.add(by_id[id(ref)])
        elif getattr(ref, "__module__", None) in project and (isinstance(ref, type) or callable(ref)):
            stack.extend(_references(ref, memo))
    return found


def _reachable(start: int, children: dict[int, set[int]]) -> set[int]:
    """Every candidate reachable from ``start`` through ``children``, ``start`` itself left out."""
    seen: set[int] = set()
    stack = list(children[start])
    while stack:
        j = stack.pop()
        if j not in seen:
            seen.add(j)
            stack.extend(children[j])
    seen.discard(start)
    return seen


def _pick(entries: list[dict[str, Any]], part_of: dict[int, list[int]], all_modules: bool) -> dict[str, Any]:
    """The listing's answer: picked specs, skipped candidates with the reason, parts left out."""
    from modelcheck.models.specs import ModelSpec

    parts = {i for i, wholes in part_of.items() if wholes}
    picked, skipped, left_out = [], [], []
    for i, entry in enumerate(entries):
        place = entry["place"]
        if i in parts and not all_modules:
            roots = [entries[j]["name"] for j in part_of[i] if j not in parts]
            left_out.append({"spec": place["text"], "name": entry["name"], "parts_of": roots})
            continue
        if entry["reason"] is not None:
            skipped.append({"spec": place["text"], "reason": entry["reason"]})
            continue
        site = entry["site"]
        spec = ModelSpec(place["text"], entry["name"], path=place["path"], module=place["module"],
                         kwargs=entry["kwargs"], origin="discovered", args=entry["args"],
                         forward_kwargs=entry["forward_kwargs"], args_origin=site["origin"] if site else "",
                         forward_origin=entry.get("forward_origin", ""))
        picked.append({"spec": spec.to_json(), "kind": entry["kind"], "site": site})
    return {"picked": picked, "skipped": skipped, "left_out": left_out}


def _refs_in(site: dict[str, Any]) -> list[str]:
    values = [*(site.get("args") or []), *(site.get("kwargs") or {}).values()]
    return [str(Path(v["$ref"].rpartition(":")[0]).resolve()) + ":" + v["$ref"].rpartition(":")[2]
            for v in values if isinstance(v, dict) and set(v) == {"$ref"}]


_TREES: dict[str, Any] = {}


def _definition(obj: Any) -> tuple[Any, dict[str, Any]] | None:
    """(ast node of ``obj``'s class or function definition, the globals its names resolve in)."""
    import inspect
    import sys

    if not isinstance(obj, type):
        try:  # a decorated factory (torchvision's @register_model, @handle_legacy_interface)
            obj = inspect.unwrap(obj)
        except ValueError:
            return None
    try:
        file = inspect.getsourcefile(obj)
    except (TypeError, OSError):
        return None
    tree = _parsed(file) if file else None
    if tree is None:
        return None
    if isinstance(obj, type):
        node = _class_node(tree, obj.__qualname__)
        module = sys.modules.get(obj.__module__)
        return (node, vars(module) if module else {}) if node is not None else None
    code = getattr(obj, "__code__", None)
    node = _function_node(tree, code) if code is not None else None
    return (node, getattr(obj, "__globals__", {})) if node is not None else None


def _parsed(file: str) -> Any:
    """The file's ast (None when it cannot be read or parsed), parsed once per job."""
    import ast

    if file not in _TREES:
        try:
            _TREES[file] = ast.parse(Path(file).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
            _TREES[file] = None
    return _TREES[file]


def _class_node(tree: Any, qualname: str) -> Any:
    """The ClassDef of a class by its qualified name (``Outer.Inner``), or None."""
    import ast

    node: Any = tree
    for part in qualname.split("."):
        node = next((n for n in getattr(node, "body", []) if isinstance(n, ast.ClassDef) and n.name == part), None)
        if node is None:
            return None
    return node


def _function_node(tree: Any, code: Any) -> Any:
    """The def a code object was compiled from (its first line is the def's or its first decorator's)."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == code.co_name and (
                node.lineno == code.co_firstlineno
                or (node.decorator_list and node.decorator_list[0].lineno == code.co_firstlineno)):
            return node
    return None


def _references(obj: Any, memo: dict[int, list[Any]]) -> list[Any]:
    """The objects ``obj``'s definition names (resolved through its module globals), or for a
    module-level instance the classes of its submodules."""
    import ast
    import inspect

    import torch.nn as nn

    key = id(obj)
    if key in memo:
        return memo[key]
    memo[key] = []
    if isinstance(obj, nn.Module):
        memo[key] = list({id(type(m)): type(m) for m in obj.modules() if m is not obj}.values())
        memo[key].extend(m for m in obj.modules() if m is not obj)
        return memo[key]
    found = _definition(obj)
    if found is None:
        return memo[key]
    node, namespace = found
    walked = node.body if isinstance(node, ast.ClassDef) else [node.args, *node.body]
    out: dict[int, Any] = {}
    for statement in walked:
        for item in ast.walk(statement):
            value = _named_value(item, namespace)
            if value is not None and not inspect.ismodule(value) and value is not obj:
                out[id(value)] = value
    memo[key] = list(out.values())
    return memo[key]


def _named_value(item: Any, namespace: dict[str, Any]) -> Any:
    """What a name or ``module.attr`` chain (an ast node) is in ``namespace``, or None: chains
    are followed through modules and classes only."""
    import ast
    import inspect

    chain: list[str] = []
    current = item
    while isinstance(current, ast.Attribute):
        chain.insert(0, current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    value = namespace.get(current.id)
    for attr in chain:
        if inspect.ismodule(value):
            value = vars(value).get(attr)
        elif isinstance(value, type):
            value = inspect.getattr_static(value, attr, None)
        else:
            return None
    return value


# ============================================================================== one model


def audit_model_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Job (torch-free itself): audit one model with the stages of ``modelcheck check``.

    Trace (dynamic pass), static rules over the files the model comes from, smoke test; each
    stage starts its own child. Network access is blocked and logged for all of them.
    """
    from modelcheck.models.specs import ModelSpec
    from modelcheck.smoke.run import skipped_stages

    spec = ModelSpec.from_json(payload["spec"])
    spec.weight_free = True  # audits always build weight-free (modelcheck.models.building)
    opts = payload["options"]
    target = make_target(opts["target"]["name"], opts["target"]["opset"], opts["target"]["exporter"])
    config = Config(timeout=float(opts["timeout"]), atol=float(opts["atol"]), rtol=float(opts["rtol"]),
                    input_shape=tuple(opts["input_shape"]))
    row = AuditRow(payload["model"], payload["kind"], "ok")
    note = args_note(spec)
    if note:
        row.notes.append(note)
    with tempfile.TemporaryDirectory(prefix="modelcheck-audit-") as tmp:
        os.environ.update(offline_env(Path(tmp)))  # inherited by every stage's child
        log = Path(os.environ["MODELCHECK_NO_NETWORK"])
        checked = _inspect_model(row, spec, target, config, Path(tmp))
        if row.status == "ok" and opts.get("smoke", True):
            _smoke_model(row, checked, spec, target, config, Path(payload["artifacts"]))
        elif opts.get("smoke", True):
            row.stages = skipped_stages(spec.text, f"not run: {row.status}", target)
        row.network = sorted(set(log.read_text().split())) if log.exists() else []
    _mark_network_and_memory(row)
    row.source_files = {f: file_digest(f) for f in sorted(set(checked.files))}
    return row.to_json()


@dataclass
class _Checked:
    """What the dynamic pass and the static rules found for one model, kept to merge the static
    findings of files only the smoke test showed."""

    files: list[str]  # the source files checked
    static: list[Finding]
    dynamic: list[Finding]
    reached: dict[str, list[tuple[int, int]]] | None  # the code the model ran (split_reached)
    imported: Sequence[str]  # the files the model imported


def _inspect_model(row: AuditRow, spec: Any, target: Target, config: Config, scratch: Path) -> _Checked:
    """The dynamic pass (build, walk, pickle probe, trace) and the static rules over the model's
    files: the row's parameters, pickle, notes, findings and status."""
    from modelcheck.trace.job import REACHED_ENV, read_reached
    from modelcheck.trace.run import (
        SourcePaths,
        check_more_files,
        dedupe,
        findings_from_constructs,
        inspect_spec,
        merge,
        model_files,
    )

    paths = SourcePaths({})
    os.environ[REACHED_ENV] = str(scratch / "reached.json")  # the inspect job says which code ran
    model, constructs = inspect_spec(spec, config.timeout, paths)
    reached_file = os.environ.pop(REACHED_ENV)
    reached = read_reached(reached_file) if model.status == "ok" else None
    row.parameters, row.pickle = model.parameters, model.pickle
    row.notes.extend(model.notes)  # weights skipped, files ported in memory, packages stubbed
    dynamic = dedupe(findings_from_constructs(constructs, spec, target, config, paths))
    files = model_files(spec, dynamic, model)
    static = check_more_files(files, (), target, config)
    row.findings, row.unreached = split_reached(merge(static.findings, dynamic), reached, model.files)
    row.status, row.detail = _status_after_inspect(model)
    return _Checked(files, static.findings, dynamic, reached, model.files)


def _smoke_model(row: AuditRow, checked: _Checked, spec: Any, target: Target, config: Config,
                 artifacts: Path) -> None:
    """The smoke test: the row's stages, and the findings of source files only it showed."""
    from modelcheck.smoke.run import run_smoke
    from modelcheck.trace.run import check_more_files, merge

    artifacts.mkdir(parents=True, exist_ok=True)
    smoke = run_smoke(spec, target, config, row.findings, artifacts)
    row.stages = smoke.stages
    row.notes.extend(smoke.notes)
    if row.parameters is None:
        row.parameters = smoke.parameters
    extra = [f for f in smoke.source_files if f not in checked.files]
    if extra:
        more = check_more_files(extra, checked.files, target, config)
        row.findings, row.unreached = split_reached(merge([*checked.static, *more.findings], checked.dynamic),
                                                    checked.reached, checked.imported)
        checked.files += extra


def _status_after_inspect(model: Any) -> tuple[str, str]:
    """The row's (status, detail) from the dynamic pass: a model modelcheck lacked inputs or forward
    arguments for is skipped, not failed."""
    needs = needs_inputs(model)
    settings = list(getattr(model, "needs_arguments", None) or [])
    if needs:
        return "skipped", f"needs {len(needs)} inputs ({', '.join(needs)})"
    if settings:  # a forward argument such as ``mode`` with no default that no script showed
        return "skipped", (f"forward needs a value for {', '.join(settings)} (no default, no call site found): "
                           "give it with --inputs module:make_inputs")
    if model.status == "ok":
        return "ok", ""
    failed = "forward failed" if model.stage == "forward" else "build failed"
    return (failed if model.status == "failed" else model.status), model.detail


def _mark_network_and_memory(row: AuditRow) -> None:
    """A model that reached for the network, or ran out of memory, says so in its status."""
    if row.network:
        row.status = "network"
        row.detail = f"reached for the network ({', '.join(row.network)}) with pretrained weights off; " + row.detail
    elif row.status != "ok" and _OOM.search(row.detail):
        row.status = "out of memory"
    for stage in row.stages:
        if stage.bad and _OOM.search(stage.detail) and row.status == "ok":
            row.status = "out of memory"


def args_note(spec: Any) -> str | None:
    """Where a model's arguments came from: ``constructor arguments from basnet_test.py:57:
    BASNet(3, 1); forward called with mode='test'``, or for a model built without arguments
    ``forward called with mode=1, as the repo does at joint_solver.py:14``; None when from nowhere."""
    from modelcheck.models.callsites import describe_args

    called = ", ".join(f"{k}={v!r}" for k, v in spec.forward_kwargs.items())
    if spec.args_origin:
        text = f"constructor arguments from {spec.args_origin}: {spec.name}({describe_args(spec.to_json())})"
        return text + (f"; forward called with {called}" if called else "")
    if spec.forward_origin and called:
        return f"forward called with {called}, as the repo does at {spec.forward_origin}"
    return None


def needs_inputs(model: Any) -> list[str]:
    """The tensor inputs a model's forward wanted and modelcheck did not have: the inspect job's
    ``needs_inputs`` marker, or the "needs N inputs (x, y)" text of its forward stage."""
    names = list(getattr(model, "needs_inputs", None) or [])
    if names:
        return [str(name) for name in names]
    found = re.search(r"needs (\d+) inputs \(([^)]*)\)", model.detail or "")
    if found and model.stage == "forward":
        return [name.strip() for name in found[2].split(",") if name.strip()]
    return []


def split_reached(findings: list[Finding], reached: dict[str, list[tuple[int, int]]] | None,
                  imported: Iterable[str] = ()) -> tuple[list[Finding], list[Finding]]:
    """(the model's findings, static findings in its files that it never reached).

    Dynamic and merged findings are the model's by construction. A static-only finding is the
    model's when its line lies inside a function the model executed while being built or run
    (``reached``: file → (first, last line) ranges, from the inspect job), or when its rule breaks
    at import time (an unresolvable import) in a file the model imported (``imported``). Without
    that record (the model did not build and run) every finding counts, as before.
    """
    from modelcheck.rules import RULES_BY_CODE

    if reached is None:
        return findings, []
    imported = {str(Path(path).resolve()) for path in imported}
    counted: list[Finding] = []
    unreached: list[Finding] = []
    for finding in findings:
        loc = finding.location
        try:
            path = str(Path(loc.path).resolve())
        except OSError:
            path = loc.path
        rule = RULES_BY_CODE.get(finding.code)
        if (finding.evidence != "static" or any(first <= loc.line <= last for first, last in reached.get(path, ()))
                or (rule is not None and rule.import_time and path in imported)):
            counted.append(finding)
        else:
            unreached.append(finding)
    return counted, unreached


# ============================================================================== the cache


def default_cache_dir() -> Path:
    """``$MODELCHECK_HOME/cache/audit``, else ``.modelcheck/cache/audit`` in the working directory."""
    home = os.environ.get("MODELCHECK_HOME")
    return (Path(home).expanduser() if home else Path(".modelcheck")) / "cache" / "audit"


def runtime_versions(target: Target) -> dict[str, str]:
    """Versions that change what an audit finds, read without importing them: the packages, and
    the runtime of each of the audited target's profiles (``Profile.status``, a cheap look)."""
    from importlib import metadata

    versions = {"modelcheck": __version__, "modelcheck_source": _own_source_digest()}
    for name in _RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    for member in target.members:
        profile = member.profile
        try:
            status = profile.status(None)
        except (ImportError, OSError):
            versions[profile.runtime] = "absent"
        else:
            versions[profile.runtime] = (status.version or "installed") if status.installed else "absent"
    return versions


def _own_source_digest() -> str:
    """modelcheck's own code (engine, rules, fixers): a changed rule must not be served from the cache
    under an unchanged version number (an editable install, a development checkout)."""
    from importlib.util import find_spec

    roots = [Path(folder) for name in ("modelcheck", "modelcheck.rules", "modelcheck.fixers")  # found, not imported
             for folder in (getattr(find_spec(name), "submodule_search_locations", None) or [])]
    files = sorted({path for root in roots for path in root.glob("*.py")})
    return _digest({str(path.relative_to(path.parent.parent)): file_digest(str(path)) for path in files})


def file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _cache_path(cache_dir: Path, task: AuditTask, versions: dict[str, str]) -> Path:
    return cache_dir / f"{_digest({'task': task.key, 'versions': versions})}.json"


def _cache_get(cache_dir: Path | None, task: AuditTask, versions: dict[str, str]) -> AuditRow | None:
    """The cached row, if its model's source files are byte for byte what they were."""
    if cache_dir is None:
        return None
    data = _read_json(_cache_path(cache_dir, task, versions))
    if data.get("format") != CACHE_FORMAT or "row" not in data:
        return None
    row = AuditRow.from_json(data["row"])
    if any(file_digest(path) != digest for path, digest in row.source_files.items()):
        return None
    row.cached = True
    return row


def _cache_put(cache_dir: Path | None, task: AuditTask, versions: dict[str, str], row: AuditRow) -> None:
    if cache_dir is None:
        return
    path = _cache_path(cache_dir, task, versions)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "row": row.to_json()}))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs time


# ============================================================================== output


def _stage_cell(stage: StageResult | None) -> str:
    if stage is None or stage.status == "skipped":
        return "-"
    if stage.max_abs_diff is not None and stage.status in ("passed", "mismatch"):
        return f"{stage.status} {stage.max_abs_diff:.2g}"
    return stage.status


def _pickle_cell(row: AuditRow) -> str:
    if row.pickle is None:
        return "-"
    if row.pickle.get("ok"):
        return "ok"
    return f"FAILS ({len(row.pickle.get('failures', [])) or '?'})"


def _findings_cell(row: AuditRow) -> str:
    counts = Counter(f.code for f in row.findings if f.severity.value in ("error", "warning"))
    return " ".join(f"{code}×{n}" if n > 1 else code for code, n in sorted(counts.items())) or "-"


def stage_columns(report: AuditReport) -> tuple[str, ...]:
    """The smoke-test stages the audited target's profile(s) run, ``export`` first: one column each."""
    return stage_order(member.profile for member in report.profile.members)


def columns(report: AuditReport) -> tuple[str, ...]:
    return ("model", "status", "pickle", *stage_columns(report), "findings", "time")


def table_rows(report: AuditReport) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per model, as the rich and text renderers show them."""
    stages = stage_columns(report)
    out = []
    for row in report.rows:
        time_cell = "cached" if row.cached else (f"{row.seconds:.1f}s" if row.seconds is not None else "")
        out.append((row.model, row.status, _pickle_cell(row), *(_stage_cell(row.stage(name)) for name in stages),
                    _findings_cell(row), time_cell))
    return out


def _details(report: AuditReport) -> list[str]:
    lines = []
    for row in report.rows:
        lines += [f"{row.model}: {note}" for note in row.notes if note.startswith("constructor arguments from")]
        if row.status != "ok":
            lines.append(f"{row.model}: {row.status}: {row.detail}")
        for stage in row.stages:
            if stage.bad:
                predicted = f" (predicted by {', '.join(stage.predicted_by)})" if stage.predicted_by else ""
                lines.append(f"{row.model}: {stage.name} {stage.status}{predicted}: {stage.detail}")
        if row.unreached:
            where = ", ".join(dict.fromkeys(f"{f.code} {_short(f.location.path)}:{f.location.line}"
                                            for f in row.unreached))
            lines.append(f"{row.model}: also in its files, not reached by this model: {where}")
    return lines


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def summary_line(report: AuditReport) -> str:
    data = report.to_json()["summary"]
    from modelcheck.report.terminal import predicted_text

    return (f"{data['models']} model(s) audited for {report.profile.label} in {data['seconds']:.1f} s: "
            f"{data['breaking']} would break, {data['cached']} from the cache"
            + (f", {data['skipped']} skipped" if data["skipped"] else "")
            + (f"; {predicted_text(data['failures'], data['predicted'])}" if data["failures"] else ""))


def render_rich(report: AuditReport, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    styles = {"ok": "green", "passed": "green", "mismatch": "bold red", "failed": "bold red", "crashed": "bold red",
              "timeout": "bold red", "FAILS": "bold red"}
    table = Table(title=f"modelcheck audit {report.target}")
    for column in columns(report):
        table.add_column(column, overflow="fold")
    styled = range(1, 3 + len(stage_columns(report)))  # status, pickle and the stages
    for cells in table_rows(report):
        table.add_row(*(Text(cell, style=styles.get(cell.split(" ")[0], "" if cell in ("-", "") else "yellow")
                             if i in styled else "") for i, cell in enumerate(cells)))
    console.print(table)
    for line in _details(report):
        console.print(Text(line), style="dim")
    for note in report.notes:
        console.print(Text(f"note: {note}"), style="dim")
    console.print(Text(summary_line(report), style="bold"))


def render_text(report: AuditReport) -> str:
    """A plain, aligned table (logs, CI), then details and the summary."""
    header = columns(report)
    rows = [header, *table_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += _details(report) + [f"note: {note}" for note in report.notes] + [summary_line(report)]
    return "\n".join(lines) + "\n"


def to_report(report: AuditReport) -> Any:
    """The audit as a check Report (findings and models with stages), e.g. for SARIF."""
    from modelcheck.findings import ModelResult, Report

    findings: dict[tuple[str, str, int, int], Finding] = {}
    models = []
    for row in report.rows:
        for finding in row.findings:
            loc = finding.location
            findings.setdefault((finding.code, loc.path, loc.line, loc.column), finding)
        status = row.status if row.status in ("ok", "timeout", "crashed") else "failed"
        models.append(ModelResult(spec=row.model, status=status, detail=row.detail, parameters=row.parameters,
                                  pickle=row.pickle, stages=list(row.stages)))
    ordered = sorted(findings.values(), key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    return Report(target=report.profile.name, opset=report.profile.opset, findings=ordered, notes=list(report.notes),
                  models=models, files_checked=len({f.location.path for f in ordered}))
