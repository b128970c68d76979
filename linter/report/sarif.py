"""Machine formats for code-scanning tools: SARIF 2.1.0 and GitHub Actions annotations.

``--format sarif`` is what GitHub code scanning (and most IDE SARIF viewers) read: one
``reportingDescriptor`` per rule code with its documentation, one ``result`` per finding at a
location relative to the ``SRCROOT`` base (the directory modelcheck ran in), and a ``fix``
with the exact replacement where a safe fixer can compute it from the source alone.
``--format github`` prints workflow commands that GitHub turns into inline annotations.

Plain data in, plain data out: no torch, no terminal (the pre-commit/CI path imports this).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelcheck import __version__
from modelcheck.findings import Finding, Report, Severity, StageResult
from modelcheck.rules import ALL_RULES, PSEUDO_CODES
from modelcheck.rules.base import Rule

SARIF_VERSION = "2.1.0"
_LINE = re.compile(r"[^\n]*\n|[^\n]+$")
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SRCROOT = "SRCROOT"
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
GITHUB_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}

#: (finding, source text of its file) → SARIF replacement objects, or None when no cheap,
#: exact edit is known (then the result carries no ``fixes``: an invalid fix is worse than none)
FixProvider = Callable[[Finding, str], list[dict[str, Any]] | None]


# --------------------------------------------------------------------------------------------
# paths


def artifact_location(path: str, base: Path) -> dict[str, Any]:
    """A relative URI under ``SRCROOT`` when the file lies below ``base``, else an absolute file URI."""
    resolved = (base / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    try:
        relative = resolved.relative_to(base.resolve())
    except ValueError:
        return {"uri": resolved.as_uri()}
    return {"uri": quote(relative.as_posix()), "uriBaseId": SRCROOT}


def _base_uri(base: Path) -> str:
    uri = base.resolve().as_uri()
    return uri if uri.endswith("/") else uri + "/"


# --------------------------------------------------------------------------------------------
# rules


def _text(value: str) -> str:
    return " ".join(value.split())


def rule_descriptor(rule: Rule, default_level: str | None) -> dict[str, Any]:
    """A SARIF reportingDescriptor: the rule's summary, and its documentation as help.

    ``help`` is :meth:`Rule.markdown` (what ``--explain`` prints), in both forms: the markdown
    reads as plain text too.
    """
    doc = rule.doc()
    command = f"modelcheck --explain {rule.code}"
    descriptor: dict[str, Any] = {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": _text(rule.summary)},
        "fullDescription": {"text": _text(f"{doc['What it does']} {doc['Why is this bad?']}")},
        "help": {"text": f"{rule.markdown()}\nExplain locally: {command}",
                 "markdown": f"{rule.markdown()}\nExplain locally: `{command}`"},
        "properties": {"tags": ["pytorch", "onnx", "export"]},
    }
    # "none" says: this rule does not fire for the run's target at all
    descriptor["defaultConfiguration"] = {"level": default_level or "none", "enabled": default_level is not None}
    return descriptor


def _pseudo_descriptor(code: str) -> dict[str, Any]:
    summary = PSEUDO_CODES.get(code, f"{code} (reported by a modelcheck stage)")
    return {
        "id": code,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": summary},
        "help": {"text": summary},
        "defaultConfiguration": {"level": "error"},
    }


def _default_level(rule: Rule, report: Report) -> str | None:
    from modelcheck.targets import TargetError, make_target

    try:
        target = make_target(report.target, report.opset)
    except TargetError:
        return None
    severity = rule.verdict(target)
    return LEVELS[severity] if severity else None


# --------------------------------------------------------------------------------------------
# results


def _region(finding: Finding) -> dict[str, Any]:
    loc = finding.location
    region: dict[str, Any] = {"startLine": max(loc.line, 1), "startColumn": max(loc.column, 1)}
    if loc.end_line is not None and loc.end_line >= loc.line:
        region["endLine"] = loc.end_line
    end_line = loc.end_line if loc.end_line is not None else loc.line
    if loc.end_column is not None and (end_line > loc.line or loc.end_column >= loc.column):
        region["endColumn"] = max(loc.end_column, 1)
    if finding.source_line is not None:
        region["snippet"] = {"text": finding.source_line}
    return region


def _result(finding: Finding, rule_index: int, base: Path, fix: list[dict[str, Any]] | None) -> dict[str, Any]:
    location = artifact_location(finding.location.path, base)
    physical: dict[str, Any] = {"artifactLocation": location, "region": _region(finding)}
    sarif_location: dict[str, Any] = {"physicalLocation": physical}
    if finding.module_path:
        qualified = f"{finding.model}:{finding.module_path}" if finding.model else finding.module_path
        sarif_location["logicalLocations"] = [{"fullyQualifiedName": qualified, "kind": "object"}]
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": finding.message},
        "locations": [sarif_location],
        "properties": {"evidence": finding.evidence.value, "fixable": finding.fixable},
    }
    if finding.model:
        result["properties"]["model"] = finding.model
    if fix:
        result["fixes"] = [{
            "description": {"text": f"modelcheck --fix: safe fix for {finding.code}"},
            "artifactChanges": [{"artifactLocation": location, "replacements": fix}],
        }]
    return result


def _source_of(path: str, sources: dict[str, str | None]) -> str | None:
    if path not in sources:
        from modelcheck.static.run import read_source

        sources[path] = read_source(Path(path))[0]
    return sources[path]


def _stage_notification(stage: StageResult) -> dict[str, Any]:
    text = f"model {stage.model}: {stage.name} {stage.status}"
    if stage.max_abs_diff is not None:
        text += f" (max abs diff {stage.max_abs_diff:.3g})"
    if stage.detail:
        text += f": {stage.detail}"
    return {"level": "error" if stage.bad else "note", "message": {"text": text},
            "descriptor": {"id": f"smoke/{stage.name}"}}


def to_sarif(
    report: Report,
    *,
    base: Path | None = None,
    sources: dict[str, str] | None = None,
    fix_provider: FixProvider | None = None,
) -> dict[str, Any]:
    """The SARIF 2.1.0 log of one report.

    ``base`` is the directory relative URIs are resolved against (default: the working
    directory). ``sources`` (path → text) and ``fix_provider`` let fixable findings carry the
    exact replacement; without them fixable findings only say so in their properties.
    """
    base = base or Path.cwd()
    descriptors, index = _descriptors(report)
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "modelcheck",
            "version": __version__,
            "semanticVersion": __version__,
            **_information_uri(),
            "rules": descriptors,
        }},
        "invocations": [_invocation(report)],
        "originalUriBaseIds": {SRCROOT: {"uri": _base_uri(base)}},
        "columnKind": "unicodeCodePoints",
        "results": _results(report, index, base, dict(sources or {}), fix_provider),
        "properties": {
            "target": report.target,
            "opset": report.opset,
            "filesChecked": report.files_checked,
            "models": [_model_properties(m) for m in report.models],
        },
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def _descriptors(report: Report) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every rule's descriptor, then one per pseudo code the report uses; and code → its index."""
    descriptors: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for rule in ALL_RULES:
        index[rule.code] = len(descriptors)
        descriptors.append(rule_descriptor(rule, _default_level(rule, report)))
    for code in sorted({f.code for f in report.findings} - set(index)):
        index[code] = len(descriptors)
        descriptors.append(_pseudo_descriptor(code))
    return descriptors, index


def _results(report: Report, index: dict[str, int], base: Path, sources: dict[str, str | None],
             fix_provider: FixProvider | None) -> list[dict[str, Any]]:
    """One result per finding; a fixable one carries its replacement where ``fix_provider`` knows it."""
    results = []
    for finding in report.findings:
        fix = None
        if finding.fixable and fix_provider is not None:
            text = _source_of(finding.location.path, sources)
            fix = fix_provider(finding, text) if text is not None else None
        results.append(_result(finding, index[finding.code], base, fix))
    return results


def _invocation(report: Report) -> dict[str, Any]:
    """The run's notes, failed stages and failed models, as tool execution notifications."""
    notifications = [{"level": "note", "message": {"text": note}} for note in report.notes]
    notifications += [_stage_notification(stage) for stage in report.stages if stage.bad]
    notifications += [
        {"level": "error", "message": {"text": f"model {m.spec}: {m.status}" + (f": {m.detail}" if m.detail else "")}}
        for m in report.models if m.status in ("failed", "crashed", "timeout")
    ]
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications
    return invocation


def _information_uri() -> dict[str, str]:
    """``informationUri`` from the installed metadata's project URLs (never an invented one)."""
    from importlib import metadata

    try:
        urls = metadata.metadata("modelcheck").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return {}
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("homepage", "documentation", "repository", "source") and url.strip():
            return {"informationUri": url.strip()}
    return {}


def _model_properties(model: Any) -> dict[str, Any]:
    data = model.to_json()
    data["stages"] = [stage.to_json() for stage in model.stages]
    return data


def render_sarif(report: Report, **kwargs: Any) -> str:
    return json.dumps(to_sarif(report, **kwargs), indent=2)


# --------------------------------------------------------------------------------------------
# fixes: the replacement a safe fixer makes, as SARIF deletedRegion + insertedContent


def replacements_from_edit(before: str, after: str) -> list[dict[str, Any]] | None:
    """SARIF replacements turning ``before`` into ``after``: one per changed hunk, each minimal.

    A fix that inserts a helper function at the top and rewrites a call further down gives two
    replacements, not one spanning everything in between. Regions are in lines and (code point)
    columns, 1-based, end exclusive, as SARIF counts with ``columnKind: unicodeCodePoints``.
    """
    if before == after:
        return None
    old_lines, new_lines = _lines(before), _lines(after)
    old_starts, new_starts = _starts(old_lines), _starts(new_lines)
    replacements = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        a0, a1 = old_starts[i1], old_starts[i2]
        b0, b1 = new_starts[j1], new_starts[j2]
        while a0 < a1 and b0 < b1 and before[a0] == after[b0]:  # trim what the hunk keeps
            a0, b0 = a0 + 1, b0 + 1
        while a1 > a0 and b1 > b0 and before[a1 - 1] == after[b1 - 1]:
            a1, b1 = a1 - 1, b1 - 1
        start_line, start_col = _line_col(before, a0)
        end_line, end_col = _line_col(before, a1)
        region = {"startLine": start_line, "startColumn": start_col, "endLine": end_line, "endColumn": end_col}
        replacements.append({"deletedRegion": region, "insertedContent": {"text": after[b0:b1]}})
    return replacements


def _lines(text: str) -> list[str]:
    """Lines with their ends, split at "\\n" only: the same lines ``_line_col`` counts."""
    return _LINE.findall(text)


def _starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    line_start = text.rfind("\n", 0, offset) + 1
    return line, offset - line_start + 1


# --------------------------------------------------------------------------------------------
# GitHub Actions workflow commands


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github_path(path: str, base: Path) -> str:
    resolved = (base / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    try:
        return resolved.relative_to(base.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def github_annotation(finding: Finding, base: Path) -> str:
    """``::error file=...,line=...,col=...,endLine=...,endColumn=...,title=MC201::message``."""
    loc = finding.location
    props = [f"file={_escape_property(_github_path(loc.path, base))}", f"line={loc.line}"]
    end_line = loc.end_line if loc.end_line is not None else loc.line
    if end_line == loc.line:  # GitHub ignores columns on multi-line annotations
        props.append(f"col={loc.column}")
        props.append(f"endLine={end_line}")
        if loc.end_column is not None and loc.end_column >= loc.column:
            props.append(f"endColumn={loc.end_column}")
    else:
        props.append(f"endLine={end_line}")
    props.append(f"title={_escape_property(finding.code)}")
    message = finding.message + (" [*] fixable with modelcheck --fix" if finding.fixable else "")
    return f"::{GITHUB_LEVELS[finding.severity]} {','.join(props)}::{_escape_data(message)}"


def render_github(report: Report, base: Path | None = None) -> str:
    """One workflow command per finding, failed model and failed smoke stage."""
    base = base or Path.cwd()
    lines = [github_annotation(f, base) for f in report.findings]
    lines.extend(_github_model_lines(report.models, base))
    return "".join(line + "\n" for line in lines)


def _github_model_lines(models: Iterable[Any], base: Path) -> Iterable[str]:
    for model in models:
        if model.status in ("failed", "crashed", "timeout"):
            title = _escape_property(f"modelcheck {model.spec}")
            yield f"::error title={title}::{_escape_data(f'{model.status}: {model.detail}')}"
        for stage in model.stages:
            if not stage.bad:
                continue
            props = []
            if stage.location is not None:
                props += [f"file={_escape_property(_github_path(stage.location.path, base))}",
                          f"line={stage.location.line}"]
            props.append(f"title={_escape_property(f'{stage.model} {stage.name}')}")
            text = stage.status
            text += f" (max abs diff {stage.max_abs_diff:.3g})" if stage.max_abs_diff is not None else ""
            text += f": {stage.detail}" if stage.detail else ""
            yield f"::error {','.join(props)}::{_escape_data(text)}"


def default_fix_provider(target_name: str, opset: int) -> FixProvider | None:
    """The fixes ``--fix --static-only`` would apply (safe, exact by construction), as a FixProvider.

    Only those: an edit that needs a model to verify it, or is exact for one input size only,
    is no fix a code-scanning tool should offer with one click. None without the fixers.
    """
    try:
        from modelcheck.fix.run import make_plans
        from modelcheck.fixers.base import FixContext
    except ImportError:
        return None
    context = FixContext(target_name, opset)

    def provide(finding: Finding, text: str) -> list[dict[str, Any]] | None:
        plans = make_plans({finding.location.path: text}, [finding], context, unsafe=False, verifiable=False)
        if not plans or plans[0].error or not plans[0].changed:
            return None  # no fix is better than an invalid one
        return replacements_from_edit(text, plans[0].fixed)

    return provide
