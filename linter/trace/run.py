"""The dynamic pass, parent side: run the inspect job per model, turn facts into findings, merge.

The parent never imports the user's code (nor torch): specs are parsed here, models are found
and built in child jobs (``discover``, ``inspect``), and what comes back is plain JSON facts.
Those facts go through the very rules the static pass uses (``rules.base.matches_for``), so a
construct seen both ways gets the same code and severity, and merges into ONE finding with
``evidence == "both"`` on (code, resolved file, line). A static "may" finding whose construct
the live models showed to be harmless is refuted (``refute``): dropped, with a note saying why.
"""

from __future__ import annotations

import contextlib
import os
import re
import sysconfig
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck import SKIP_DIRS, own_code_dirs
from modelcheck.findings import Finding, Location, ModelResult
from modelcheck.jobs.run import ChildOutcome, run_job
from modelcheck.models.specs import ModelSpec, discovery_files, specs_from_config
from modelcheck.rules import FAMILIES, FAMILY_OF_CODE
from modelcheck.rules.base import matches_for
from modelcheck.static.run import StaticResult, check_paths, suppressed
from modelcheck.text import read_json, signal_name
from modelcheck.trace.job import ROOT_PATH, decode_facts

_KIND_WORDS = {
    "instance": "module-level nn.Module instance",
    "class": "nn.Module class, built without arguments",
    "factory": "factory function, called without arguments",
}


@dataclass
class DynamicResult:
    """What the dynamic pass adds to a run: merged findings, one ModelResult per spec, notes."""

    findings: list[Finding] = field(default_factory=list)
    models: list[ModelResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    specs: list[ModelSpec] = field(default_factory=list)
    #: the static pass over project files the models are built from that were not checked yet
    #: (``also_checked``): their findings are merged into ``findings``, their text is here for --fix
    also: StaticResult = field(default_factory=StaticResult)
    #: the static findings tracing dropped (``refute``): --fix's re-check of a rewritten file drops them too
    refuted: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class Observation:
    """One construct the dynamic pass saw at a source span, and the codes its live facts fire.

    What lets tracing settle a static "may": seen, and nothing fired, means harmless.
    """

    family: str
    path: str  # resolved
    line: int
    column: int
    end_line: int | None
    end_column: int | None
    model: str
    facts: str  # the live values, for the note: "Upsample(mode='nearest')"
    fires: frozenset[str]
    #: codes whose rule the live facts clear however certain the source looked (``Rule.cleared_by``)
    cleared: frozenset[str] = frozenset()

    def covers(self, location: Location) -> bool:
        """Is ``location`` (a static finding's start) inside this construct's span?"""
        if (self.path, self.line) != (_resolve(location.path), location.line) or location.column < self.column:
            return False
        return self.end_line != self.line or self.end_column is None or location.column < self.end_column


class SourcePaths:
    """Maps the absolute files the child reports to the paths the user sees (as given, or relative)."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources
        self.display = {_resolve(path): path for path in sources}
        self.cwd = Path.cwd().resolve()
        self._lines: dict[str, list[str]] = {}

    def show(self, path: str) -> str:
        resolved = _resolve(path)
        if resolved in self.display:
            return self.display[resolved]
        try:
            return str(Path(resolved).relative_to(self.cwd))
        except ValueError:
            return path

    def lines(self, display: str) -> list[str]:
        if display not in self._lines:
            text = self.sources.get(display)
            if text is None:
                try:
                    text = Path(display).read_text(encoding="utf-8-sig")
                except (OSError, UnicodeDecodeError):
                    text = ""
            self._lines[display] = text.splitlines()
        return self._lines[display]


def _resolve(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return path


def run_dynamic(options: Any, static: StaticResult) -> DynamicResult:
    """Specs (flags, pyproject or discovery) → inspect each in a child → merged findings."""
    result = DynamicResult()
    progress = getattr(options, "progress", None) or (lambda line: None)
    progress("looking for models" if not (options.model_specs or options.config.models) else "reading model specs")
    specs, notes = resolve_specs(options, static)
    result.specs, result.notes = specs, notes
    paths = SourcePaths(static.sources)
    dynamic: list[Finding] = []
    observed: list[Observation] = []
    for spec in specs:
        progress(f"tracing {spec.text}: import, build, pickle probe, forward")
        model, constructs = inspect_spec(spec, options.config.timeout, paths)
        result.models.append(model)
        result.notes.extend(f"model {spec.text}: {note}" for note in model.notes)
        dynamic.extend(findings_from_constructs(constructs, spec, options.target, options.config, paths))
        observed.extend(observations(constructs, spec, options.target))
    dynamic = dedupe(dynamic)
    files = [paths.show(f) for spec, model in zip(specs, result.models, strict=True)
             for f in model_files(spec, [d for d in dynamic if d.model == spec.text], model)]
    result.also = check_more_files(files, static.sources, options.target, options.config,
                                   roots=project_roots(static.sources, options.config))
    result.notes.extend(result.also.notes)
    everything = [*static.findings, *result.also.findings]
    kept, refuted = refute(everything, observed)
    result.notes.extend(refuted)
    still = {id(f) for f in kept}
    result.refuted = [f for f in everything if id(f) not in still]
    result.findings = merge(kept, dynamic)
    return result


# ----- the files a model is built from: checked statically too ----------------------------------

def model_files(spec: Any, findings: Iterable[Finding], model: Any) -> list[str]:
    """The model's source files (absolute): its spec's file, the project files the child imported to
    build it, the files its constructs were built in (``findings``, the dynamic ones) and those
    defining what its pickle probe could not pickle."""
    files: set[str] = {_resolve(path) for path in getattr(model, "files", None) or []}
    if spec.path:
        files.add(_resolve(spec.path))
    for finding in findings:
        files.add(_resolve(finding.location.path))
    for failure in (getattr(model, "pickle", None) or {}).get("failures", []):
        where = failure.get("defined_at")
        if where:
            files.add(_resolve(where.rpartition(":")[0]))
    return sorted(f for f in files if f.endswith(".py") and Path(f).is_file())


def project_roots(sources: Iterable[str], config: Any) -> list[Path]:
    """The folders whose files belong to the project: the working directory, the folder of the
    pyproject.toml in use, and the common folder of the checked files (never a filesystem root)."""
    roots = [Path.cwd().resolve()]
    if getattr(config, "root", None) is not None:
        roots.append(Path(config.root).resolve())
    folders = [str(Path(_resolve(path)).parent) for path in sources]
    if folders:
        with contextlib.suppress(ValueError):  # folders on different drives
            roots.append(Path(os.path.commonpath(folders)))
    return [root for root in dict.fromkeys(roots) if root != Path(root.anchor)]


def _installed_dirs() -> list[Path]:
    """Where installed code lives: the stdlib, site-packages, and modelcheck's own packages."""
    found = sysconfig.get_paths()
    dirs = {*(found.get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")),
            *own_code_dirs()}
    return [Path(_resolve(d)) for d in dirs if d]


def is_project_file(path: str, roots: Iterable[Path], config: Any) -> bool:
    """A file of the user's project: under one of ``roots``, not installed code (site-packages,
    stdlib, a virtual environment, modelcheck itself), not in a folder the walk skips (``.venv``,
    ``build``), and not excluded by the config's ``exclude``."""
    real = Path(_resolve(path))
    if {"site-packages", "dist-packages"} & set(real.parts):
        return False
    if any(real.is_relative_to(d) for d in _installed_dirs()):
        return False
    for root in roots:
        if real.is_relative_to(root):
            inside = real.relative_to(root).parts[:-1]
            if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in inside):
                return False
            return not config.excluded(Path(path))
    return False


def check_more_files(files: Iterable[str], checked: Iterable[str], target: Any, config: Any, *,
                     roots: Sequence[Path] | None = None) -> StaticResult:
    """The static pass over those of ``files`` not among ``checked`` (compared resolved).

    With ``roots``, only the project files under them (``is_project_file``); without, every one
    (the audit checks installed models). Findings keep the paths as given in ``files``, so
    suppression comments and per-file-ignores apply as to any checked file.
    """
    seen = {_resolve(path) for path in checked}
    todo: list[Path] = []
    for file in files:
        resolved = _resolve(file)
        if resolved in seen or (roots is not None and not is_project_file(file, roots, config)):
            continue
        seen.add(resolved)
        todo.append(Path(file))
    return check_paths(todo, target, config) if todo else StaticResult()


def resolve_specs(options: Any, static: StaticResult) -> tuple[list[ModelSpec], list[str]]:
    """``--model`` flags, else ``[tool.modelcheck.models]``, else models discovered in the checked files."""
    dtype = getattr(options, "dtype", "float32")
    specs = specs_from_config(options.model_specs, options.model_args, options.config, dtype)
    weight_free = options.weight_free  # --no-weight-free turns it off
    for spec in specs:
        spec.weight_free = weight_free
    if specs:
        return specs, []
    files, notes = discovery_files(static.sources)
    if not files:
        return [], notes
    outcome = run_job("discover", {"files": files}, options.config.timeout)
    if not outcome.ok:
        notes.append(f"models: looking for models failed ({outcome.describe()}); no model was traced")
        return [], notes
    value = outcome.value
    for error in value["errors"]:
        notes.append(f"models: cannot import {error['file']} to look for models: {error['error']}")
    for picked in value["picked"]:
        where, _, name = picked["spec"].rpartition(":")
        specs.append(ModelSpec(picked["spec"], name, path=where, input_shapes=options.config.input_shapes,
                               inputs=options.config.inputs, dtype=dtype, origin="discovered",
                               weight_free=weight_free, args=list(picked.get("args") or []),
                               kwargs=dict(picked.get("kwargs") or {}),
                               forward_kwargs=dict(picked.get("forward_kwargs") or {}),
                               args_origin=picked.get("args_origin", ""),
                               forward_origin=picked.get("forward_origin", "")))
        origin = (f"; arguments from {picked['args_origin']}" if picked.get("args_origin") else
                  f"; forward's arguments from {picked['forward_origin']}" if picked.get("forward_origin") else "")
        notes.append(f"models: picked {picked['spec']} ({_KIND_WORDS[picked['kind']]}{origin})")
    for skipped in value["skipped"]:
        notes.append(f"models: skipped {skipped['spec']}: {skipped['reason']}")
    if not value["picked"] and not value["errors"]:
        notes.append("models: no model found to trace (pass --model file.py:Name)")
    return specs, notes


def inspect_spec(spec: ModelSpec, timeout: float, paths: SourcePaths) -> tuple[ModelResult, list[dict[str, Any]]]:
    """Run the inspect job for one spec; every way it can end becomes a ModelResult."""
    with tempfile.TemporaryDirectory(prefix="modelcheck-inspect-") as tmp:
        progress, crash_log = Path(tmp) / "progress.json", Path(tmp) / "stack.txt"
        payload = {"spec": spec.to_json(), "progress": str(progress), "crash_log": str(crash_log),
                   "deadline": time.time() + timeout}
        outcome = run_job("inspect", payload, timeout)
        partial = read_json(progress)
        stack = crash_log.read_text(errors="replace") if crash_log.exists() else ""
    return model_result(spec, outcome, partial, paths, stack)


def model_result(
    spec: ModelSpec, outcome: ChildOutcome, partial: dict[str, Any] | None, paths: SourcePaths, stack: str = "",
) -> tuple[ModelResult, list[dict[str, Any]]]:
    """A ModelResult (status, stage, detail, pickle) and the constructs learned before any failure."""
    value = outcome.value if outcome.ok else (partial or {})
    model = ModelResult(spec=spec.text, status="ok", parameters=value.get("parameters"),
                        notes=list(value.get("build_notes") or []), files=list(value.get("project_files") or []))
    if outcome.ok:
        if value.get("status") != "ok":
            model.status, model.stage = "failed", value.get("stage")
            model.detail = f"{model.stage}: {value.get('error', 'failed')}"
            model.traceback = value.get("traceback", "")
            model.needs_inputs = list(value.get("needs_inputs") or [])
            model.needs_arguments = list(value.get("needs_arguments") or [])
    else:
        model.status = {"timeout": "timeout", "crashed": "crashed"}.get(outcome.status, "failed")
        model.stage = value.get("stage")
        frames = _dumped_stack(stack)
        where = _innermost_user_frame(frames, paths)
        model.detail = f"{model.stage or 'start'}: {outcome.describe()}" if outcome.status != "crashed" else (
            f"{model.stage or 'start'}: crashed ({signal_name(outcome.signal)})")
        if where:
            model.detail += f", at {where}"
        model.traceback = "\n".join(frames[:12]) if frames else outcome.traceback_tail
    if value.get("pickle") is not None:
        model.pickle = _pickle_json(value["pickle"], paths)
    if value.get("graph") is not None:
        model.graph = _graph_json(value["graph"], paths)
    return model, list(value.get("constructs") or [])


def _dumped_stack(text: str) -> list[str]:
    """The main thread's frames (innermost first) from a faulthandler dump, made relative."""
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", text.strip())
    main = next((b for b in reversed(blocks) if b.startswith("Current thread")), blocks[-1] if blocks else "")
    return [line.strip() for line in main.splitlines() if line.strip().startswith("File ")]


def _innermost_user_frame(frames: list[str], paths: SourcePaths) -> str | None:
    """``file.py:33 in forward`` for the innermost frame outside torch and modelcheck."""
    own = (*own_code_dirs(), str(Path(sysconfig.get_paths()["stdlib"]).resolve()))
    torch_dir = f"{os.sep}site-packages{os.sep}torch{os.sep}"
    for line in frames:
        match = re.match(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)', line)
        if not match:
            continue
        file = match["file"]
        if file.startswith("<") or torch_dir in file or _resolve(file).startswith(own):
            continue
        return f"{paths.show(file)}:{match['line']} in {match['func']}"
    return None


def _site(location: dict[str, Any] | None, paths: SourcePaths) -> dict[str, Any] | None:
    if not location:
        return None
    return {**location, "path": paths.show(location["path"])}


def _describe_site(site: dict[str, Any] | None) -> str | None:
    return f"{site['path']}:{site['line']}" if site else None


def _pickle_json(probe: dict[str, Any], paths: SourcePaths) -> dict[str, Any]:
    failures = []
    for failure in probe.get("failures", []):
        site = _site(failure.get("location"), paths)
        failures.append({
            "path": failure["path"], "type": failure["type"], "kind": failure.get("kind"),
            "name": failure.get("name"),
            "defined_at": _describe_site(site),
            "line": site["line"] if site else None,
            "source": (failure.get("source") or "").strip(),
            "constructed_at": _describe_site(_site(failure.get("constructed_at"), paths)),
            **({"error": failure["error"]} if failure.get("error") else {}),
        })
    data = {"ok": probe["ok"], "failures": failures}
    for attempt in ("pickle_dumps", "torch_save"):
        if attempt in probe:
            data[attempt] = probe[attempt]
    if probe.get("walk_complete") is False:
        data["walk_complete"] = False
    return data


def _graph_json(graph: dict[str, Any], paths: SourcePaths) -> dict[str, Any]:
    ops = [{**op, "location": _site(op.get("location"), paths)} for op in graph.get("ops", [])]
    return {**graph, "ops": ops}


def findings_from_constructs(
    constructs: Iterable[dict[str, Any]], spec: ModelSpec, target: Any, config: Any, paths: SourcePaths
) -> list[Finding]:
    """The rules' verdicts on live facts, located at the user's source lines."""
    findings = []
    for construct in constructs:
        if construct.get("ran") is False:  # a layer forward never called: not in the export
            continue
        family, facts = _decoded(construct)
        site = _site(construct.get("location"), paths)
        if site is None:  # nothing on the stack was the user's: point at the spec itself
            site = {"path": spec.path or spec.module or spec.text, "line": 1, "column": 1}
        location = Location(site["path"], site["line"], site.get("column", 1),
                            site.get("end_line"), site.get("end_column"))
        lines = paths.lines(location.path)
        for rule, match, severity in matches_for(family.rules, facts, target):
            finding = Finding(
                code=rule.code, message=match.message, severity=severity, location=location,
                fixable=match.fixable, evidence="dynamic", model=spec.text,
                module_path=construct.get("module_path") or ROOT_PATH,
                source_line=lines[location.line - 1] if 0 < location.line <= len(lines) else None,
                certain=match.certain, targets=match.targets,
            )
            if config.code_enabled(finding.code, location.path) and not suppressed(finding, lines):
                findings.append(finding)
    return findings


def observations(constructs: Iterable[dict[str, Any]], spec: ModelSpec, target: Any) -> list[Observation]:
    """Every construct the child saw at a user's source line, with the codes its facts fire at ``target``.

    Unlike ``findings_from_constructs`` this keeps the harmless ones too: they are what refutes a
    static "may". Constructs without a user site say nothing about any line and are left out.
    """
    seen = []
    for construct in constructs:
        site = construct.get("location")
        if not site:
            continue
        family, facts = _decoded(construct)
        unrun = construct.get("ran") is False  # built, never called by forward: nothing of it is exported
        fires = frozenset(() if unrun else (rule.code for rule, _, _ in matches_for(family.rules, facts, target)))
        cleared = family.codes if unrun else frozenset(rule.code for rule in family.rules if rule.cleared_by(facts))
        seen.append(Observation(
            family=family.name, path=_resolve(site["path"]), line=site["line"], column=site.get("column", 1),
            end_line=site.get("end_line"), end_column=site.get("end_column"), model=spec.text,
            facts=family.describe(facts) + (", built but never called by forward" if unrun else ""), fires=fires,
            cleared=cleared,
        ))
    return seen


def _decoded(construct: dict[str, Any]) -> tuple[Any, Any]:
    """(rule family, facts) of a construct the child reported."""
    name, facts = decode_facts(construct)
    return next(family for family in FAMILIES if family.name == name), facts


def refute(static: list[Finding], observed: list[Observation]) -> tuple[list[Finding], list[str]]:
    """Static findings minus the "may" ones tracing showed harmless, and a note for each dropped one.

    A static finding that is not ``certain`` is refuted when at least one traced model built or
    called a construct of its rule family spanning its location, and none of those sightings fires
    its code (``mode=self.mode`` was ``'nearest'`` in every model). A certain one only when every
    sighting clears its code (``Rule.cleared_by``: a bilinear upsample of a 1×1 map). A construct
    never seen (that model not traced, a branch forward never took) leaves the finding as it is: no
    evidence either way.
    """
    kept: list[Finding] = []
    notes: list[str] = []
    for finding in static:
        family = FAMILY_OF_CODE.get(finding.code)
        seen = [o for o in observed if o.family == family.name and o.covers(finding.location)] if family else []
        cleared = bool(seen) and all(finding.code in o.cleared for o in seen)
        if not cleared and (finding.certain or not seen or any(finding.code in o.fires for o in seen)):
            kept.append(finding)
            continue
        loc = finding.location
        facts = "; ".join(dict.fromkeys(f"{o.facts} in model {o.model}" for o in seen))
        notes.append(f"{finding.code} at {loc.path}:{loc.line} refuted by tracing: {facts}")
    return kept, notes


def dedupe(findings: list[Finding]) -> list[Finding]:
    """One dynamic finding per construct (code + place), however many objects or calls showed it.

    A lambda written once inside a loop makes many function objects; a decoder block's
    ``F.interpolate`` runs once per block. The most severe sighting speaks for the construct.
    """
    best: dict[tuple[str, str, int, int], Finding] = {}
    for finding in findings:
        loc = finding.location
        key = (finding.code, _resolve(loc.path), loc.line, loc.column)
        kept = best.get(key)
        if kept is None or finding.severity.rank > kept.severity.rank:
            best[key] = finding
    return list(best.values())


def merge(static: list[Finding], dynamic: list[Finding]) -> list[Finding]:
    """Static + dynamic findings, a construct seen both ways becoming one ``"both"`` finding.

    The key is (code, resolved file, line): static paths are as given on the command line,
    dynamic ones absolute. Several findings of one code on one line pair up by nearest column.
    The merged finding keeps the static location and fix flag (fixers work on the source) and
    takes the dynamic message and severity when they are at least as strong, or when they are
    certain and the static ones a guess: they describe the live model (``mode='bilinear'`` where
    the source only says ``mode=self.mode``). Seen fire in a live model, the finding is certain.
    """
    merged = list(static)
    free: dict[tuple[str, str, int], list[int]] = {}
    for index, finding in enumerate(static):
        free.setdefault((finding.code, _resolve(finding.location.path), finding.location.line), []).append(index)
    for finding in dynamic:
        candidates = free.get((finding.code, _resolve(finding.location.path), finding.location.line))
        if not candidates:  # --fix works from source: only what the static pass saw is fixable
            merged.append(finding.with_(fixable=False))
            continue
        index = min(candidates, key=lambda i: abs(merged[i].location.column - finding.location.column))
        candidates.remove(index)
        seen = merged[index]
        stronger = finding.severity.rank >= seen.severity.rank or (finding.certain and not seen.certain)
        merged[index] = seen.with_(
            evidence="both", model=finding.model, module_path=finding.module_path,
            severity=finding.severity if stronger else seen.severity,
            message=finding.message if stronger else seen.message,
            certain=seen.certain or finding.certain,
        )
    merged.sort(key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    return merged
