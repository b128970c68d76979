"""Render a Report for people (rich or plain text) and for machines (JSON).

The reporter knows nothing of torch or libcst: it reads plain data only.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from modelcheck.findings import Evidence, Finding, ModelResult, Report, Severity, StageResult, StageStatus
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: 2: ``targets`` (every target of the run) and each stage's ``target``; ``summary.failures``/``predicted``
JSON_VERSION = 2
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
#: a bad smoke stage no finding predicted: a gap in the rules, said loudly
UNPREDICTED = "UNPREDICTED by any finding"
_STATUS_STYLE = {StageStatus.PASSED: "green", StageStatus.SKIPPED: "dim", StageStatus.FAILED: "bold red",
                 StageStatus.MISMATCH: "bold red", StageStatus.CRASHED: "bold red", StageStatus.TIMEOUT: "bold red"}


def summary(report: Report) -> dict[str, Any]:
    """The counts ``--format json`` writes under ``summary`` (and the summary line is made of)."""
    by_severity = Counter(f.severity.value for f in report.findings)
    by_code = Counter(f.code for f in report.findings)
    return {
        "files": report.files_checked,
        "also_checked": report.also_checked,
        "findings": len(report.findings),
        "by_severity": {s.value: by_severity.get(s.value, 0) for s in Severity},
        "by_code": dict(sorted(by_code.items())),
        "fixable": sum(f.fixable for f in report.findings),
        "stages": dict(Counter(s.status.value for s in report.stages)),
        "failures": sum(s.bad for s in report.stages),
        "predicted": sum(s.bad and bool(s.predicted_by) for s in report.stages),
    }


def targets_of(report: Report) -> list[str]:
    """Every target of the run, primary first."""
    return list(report.targets) or [report.target]


def predicted_text(failures: int, predicted: int) -> str:
    """``7 of 7 failures predicted by a finding``: how much of what broke modelcheck saw coming."""
    return f"{predicted} of {failures} smoke-test failure(s) predicted by a finding"


def matrix(report: Report) -> list[tuple[str, dict[str, str]]]:
    """Models × targets: one short cell per pair, from the stages of that target."""
    rows = []
    for model in report.models:
        cells = {}
        for target in targets_of(report):
            stages = [s for s in model.stages if (s.target or report.target) == target]
            cells[target] = _cell(stages) if stages else model.status
        rows.append((model.spec, cells))
    return rows


def _cell(stages: list[StageResult]) -> str:
    """``passed (1.2e-07 of scale)``, ``mismatch at litert (0.53 of scale), predicted by MC207``, ``skipped: ...``."""
    bad = next((s for s in stages if s.bad), None)
    if bad is not None:
        size = f" ({bad.max_rel_diff:.2g} of scale)" if bad.max_rel_diff is not None else ""
        why = f", predicted by {', '.join(bad.predicted_by)}" if bad.predicted_by else f", {UNPREDICTED}"
        return f"{bad.status} at {bad.name}{size}{why}"
    ran = [s for s in stages if s.status is StageStatus.PASSED]
    skipped = next((s for s in stages if s.status is StageStatus.SKIPPED), None)
    if skipped is not None and len(ran) <= 1:  # nothing beyond the export ran
        return f"{'export passed; ' if ran else ''}{skipped.name} skipped: {skipped.detail}"
    rel = max((s.max_rel_diff for s in ran if s.max_rel_diff is not None), default=None)
    return "passed" + (f" ({rel:.2g} of scale)" if rel is not None else "")


def to_json(report: Report) -> dict[str, Any]:
    """The JSON document; its shape is versioned by ``version``."""
    return {
        "version": JSON_VERSION,
        "target": report.target,
        "opset": report.opset,
        "targets": targets_of(report),
        "findings": [f.to_json() for f in report.findings],
        "models": [m.to_json() for m in report.models],
        "stages": [s.to_json() for s in report.stages],
        "fixes": [record.to_json() for record in report.fixes],
        "diff": report.diff,
        "notes": report.notes,
        "summary": summary(report),
    }


def render_json(report: Report) -> str:
    return json.dumps(to_json(report), indent=2)


def _finding_head(finding: Finding) -> str:
    loc = finding.location
    marker = " [*]" if finding.fixable else ""
    extra = f" ({finding.evidence})" if finding.evidence is not Evidence.STATIC else ""
    where = f" in {finding.model}:{finding.module_path}" if finding.module_path else ""
    return f"{loc.path}:{loc.line}:{loc.column}: {finding.code}{marker} {finding.message}{where}{extra}"


def _where(finding: Finding, report: Report) -> str:
    """`` at executorch, litert`` when a run has several targets and the finding matters at only some."""
    names = targets_of(report)
    if len(names) < 2 or not finding.targets or set(finding.targets) >= set(names):
        return ""
    return f" at {', '.join(finding.targets)}"


def _underline(finding: Finding) -> tuple[str, str] | None:
    """The flagged source line and a caret line under the construct (first line only)."""
    line = finding.source_line
    if not line:
        return None
    loc = finding.location
    start = max(loc.column - 1, 0)
    end = (loc.end_column - 1) if loc.end_line in (None, loc.line) and loc.end_column else len(line)
    end = max(min(end, len(line)), start + 1)
    return line, " " * start + "^" * (end - start)


def render_text(report: Report) -> str:
    """Plain text for pipes and logs: one finding a line, source and caret, then a summary."""
    out: list[str] = [report.diff] if report.diff else []
    for note in report.notes:
        out.append(f"note: {note}")
    for finding in report.findings:
        out.append(f"{_finding_head(finding)} [{finding.severity.value}{_where(finding, report)}]")
        under = _underline(finding)
        if under:
            out.append(f"    {under[0]}")
            out.append(f"    {under[1]}")
    for model in report.models:
        out.append(f"model {model.spec}: {_status_text(model)}" + (f" ({model.detail})" if model.detail else ""))
        if model.pickle is not None:
            out.append(f"  pickle: {'ok' if model.pickle.get('ok') else 'FAILS'}")
            for failure in model.pickle.get("failures", []):
                out.append(f"    {failure['path']}: {failure['type']} defined at {failure.get('defined_at')}")
        many = len(targets_of(report)) > 1
        for stage in model.stages:
            out.append("  " + (f"{stage.target}/" if many else "") + _stage_line(stage))
    if len(targets_of(report)) > 1 and report.models:
        out += [f"{spec} @ {target}: {cell}" for spec, cells in matrix(report) for target, cell in cells.items()]
    out.append(summary_line(report))
    return "\n".join(out) + "\n"


def _status_text(model: ModelResult) -> str:
    """What the dynamic pass's status means: "ok" is only that the model was built and traced (its
    pickle probe and stages follow, and may fail)."""
    return "built and traced" if model.status == "ok" else model.status


def _stage_line(stage: StageResult) -> str:
    diff = f" max_abs_diff={stage.max_abs_diff:.3g}" if stage.max_abs_diff is not None else ""
    seconds = f" {stage.seconds:.2f}s" if stage.seconds is not None else ""
    predicted = f" (predicted by {', '.join(stage.predicted_by)})" if stage.predicted_by else ""
    if stage.bad and not stage.predicted_by:
        predicted = f" ({UNPREDICTED})"
    detail = f": {stage.detail}" if stage.detail else ""
    return f"{stage.name}: {stage.status}{seconds}{diff}{predicted}{detail}"


def summary_line(report: Report) -> str:
    """The last line of every report: counts by severity, what --fix can fix, the target."""
    data = summary(report)
    sev = data["by_severity"]
    parts = [f"{data['findings']} finding(s) in {data['files']} file(s)"]
    parts.append(f"{sev['error']} error(s), {sev['warning']} warning(s), {sev['info']} info")
    if data["fixable"]:
        parts.append(f"{data['fixable']} fixable with --fix")
    if data["failures"]:
        parts.append(predicted_text(data["failures"], data["predicted"]))
    return "; ".join(parts) + f" [{_targets_label(report)}]"


def _targets_label(report: Report) -> str:
    """``target caffe2, opset 9``; with several, ``targets caffe2 (opset 9), executorch``."""
    names = targets_of(report)
    primary = f"{report.target}, opset {report.opset}" if report.opset else report.target
    if len(names) == 1:
        return f"target {primary}"
    first = f"{report.target} (opset {report.opset})" if report.opset else report.target
    return "targets " + ", ".join([first, *names[1:]])


def render_rich(report: Report, console: Console) -> None:
    """The terminal report: grouped by file, source line underlined, then summary tables."""
    if report.diff:
        from rich.syntax import Syntax

        console.print(Syntax(report.diff, "diff", theme="ansi_dark", background_color="default"))
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))
    current = None
    for finding in report.findings:
        if finding.location.path != current:
            current = finding.location.path
            console.print(Text(f"\n{current}", style="bold underline"))
        _render_finding(finding, report, console)
    many = len(targets_of(report)) > 1
    for model in report.models:
        _render_model(model, console, many)
    if many and report.models:
        _render_matrix(report, console)
    if summary(report)["by_code"]:
        _render_code_counts(report, console)
    console.print()
    console.print(Text(summary_line(report), style="bold"))


def _render_finding(finding: Finding, report: Report, console: Console) -> None:
    """One finding: ``line:column code severity [*] message``, then its source line underlined."""
    loc = finding.location
    head = Text()
    head.append(f"  {loc.line}:{loc.column} ", style="dim")
    head.append(finding.code, style=_STYLE[finding.severity])
    head.append(f" {finding.severity.value}{_where(finding, report)}", style=_STYLE[finding.severity])
    if finding.fixable:
        head.append(" [*]", style="green")
    head.append(f" {finding.message}")
    if finding.module_path:
        head.append(f" in {finding.model}:{finding.module_path}", style="magenta")
    if finding.evidence is not Evidence.STATIC:
        head.append(f" ({finding.evidence})", style="dim")
    console.print(head)
    under = _underline(finding)
    if under:
        console.print(Text(f"      {under[0]}", style="white"))
        console.print(Text(f"      {under[1]}", style=_STYLE[finding.severity]))


def _render_code_counts(report: Report, console: Console) -> None:
    """Findings by code: one row per (code, severity), most severe first within a code."""
    table = Table(title="Findings by code", show_edge=False)
    table.add_column("code")
    table.add_column("severity")
    table.add_column("count", justify="right")
    pairs = Counter((f.code, f.severity) for f in report.findings)
    for (code, severity), count in sorted(pairs.items(), key=lambda kv: (kv[0][0], -kv[0][1].rank)):
        table.add_row(code, Text(severity.value, style=_STYLE[severity]), str(count))
    console.print()
    console.print(table)


def _render_matrix(report: Report, console: Console) -> None:
    """Models × targets: where each model is going, and how far it gets."""
    table = Table(title="Models × targets", show_edge=False)
    table.add_column("model")
    for target in targets_of(report):
        table.add_column(target)
    for spec, cells in matrix(report):
        table.add_row(spec, *(Text(cell, style="green" if cell.startswith("passed") else
                                   "dim" if " skipped: " in cell else "bold red") for cell in cells.values()))
    console.print()
    console.print(table)


def _render_model(model: ModelResult, console: Console, many: bool = False) -> None:
    console.print()
    title = f"model {model.spec}: {_status_text(model)}"
    if model.parameters is not None:
        title += f", {model.parameters:,} parameters"
    console.print(Text(title, style="bold"))
    if model.detail:
        console.print(Text(f"  {model.detail}", style="red" if model.status != "ok" else "dim"))
    if model.pickle is not None:
        ok = model.pickle.get("ok")
        console.print(Text(f"  torch.save(model): {'works (verified)' if ok else 'FAILS'}",
                           style="green" if ok else "bold red"))
        for failure in model.pickle.get("failures", []):
            console.print(f"    {failure['path']}: {failure['type']} defined at {failure.get('defined_at')}")
    if model.stages:
        table = Table(show_edge=False)
        for column in (("target",) if many else ()) + ("stage", "status", "seconds", "max abs diff", "detail"):
            table.add_column(column)
        for stage in model.stages:
            detail = Text(stage.detail)
            if stage.predicted_by:
                detail = Text(f"predicted by {', '.join(stage.predicted_by)}; {stage.detail}")
            elif stage.bad:
                detail = Text.assemble((UNPREDICTED, "bold red reverse"), f"; {stage.detail}")
            table.add_row(
                *((stage.target,) if many else ()),
                stage.name,
                Text(stage.status, style=_STATUS_STYLE.get(stage.status, "")),
                f"{stage.seconds:.2f}" if stage.seconds is not None else "",
                f"{stage.max_abs_diff:.3g}" if stage.max_abs_diff is not None else "",
                detail,
            )
        console.print(table)
