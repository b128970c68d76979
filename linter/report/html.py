"""One self-contained HTML page for a check run or an audit (``--format html``).

Plain functions over plain data: a :class:`~modelcheck.findings.Report` or an
:class:`~modelcheck.audit.run.AuditReport` becomes a :class:`Page` (a models × targets matrix, the
findings, the notes, the summary line), and :func:`render_page` writes it as HTML with inline CSS
and a little inline JS: no external resource, no CDN, it works offline and from ``file://``.
Without JS every table still renders; JS only adds click-to-sort on the table headers (the
severity filter is CSS ``:has()``).

Several targets: a :class:`MatrixRow` holds one :class:`TargetResult` per target label, and
:func:`merge_pages` joins the pages of runs for different targets (``render_report(caffe2_report,
onnx_report)``) into one matrix, a column group per target. Every string from user code (model
names, messages, source lines) is HTML-escaped. This module never imports torch.

Test hook (also handy for links): the fragment ``#sort=findings:severity,matrix:-model`` clicks
those column headers on load (``-`` clicks twice: descending) and ``&hide=info,warning`` unticks
those severities.
"""

from __future__ import annotations

import datetime
import html
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck import __version__
from modelcheck.findings import Finding, Report, Severity, StageResult
from modelcheck.targets import PROFILES, STAGES

#: how many source lines are shown above and below a finding's line
CONTEXT_LINES = 2
#: the smoke stages in pipeline order; stages of other targets follow in the order first seen
#: stage columns in the order the target profiles run them, each headed by its stage's label
STAGE_ORDER = STAGES
STAGE_LABELS = {"export": "export", **{stage.name: stage.label for p in PROFILES.values() for stage in p.stages}}
UNPREDICTED = "UNPREDICTED"
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


# ============================================================================== plain data


@dataclass
class TargetResult:
    """One model at one target: a verdict and the smoke stages run for it."""

    status: str  # "ok" | "would break" | "skipped" | the model's failure ("build failed", "timeout", ...)
    stages: list[StageResult] = field(default_factory=list)
    detail: str = ""  # why the model failed, when it did


@dataclass
class MatrixRow:
    """One model: its result per target label, and the columns that do not depend on the target."""

    model: str
    results: dict[str, TargetResult] = field(default_factory=dict)
    pickle: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)  # the constructs this model contains
    unreached: list[Finding] = field(default_factory=list)  # audit: in its files, never run by it
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None
    cached: bool = False
    parameters: int | None = None


@dataclass
class PageFinding:
    """A finding as listed on the page: which models contain it, at which target it was judged."""

    finding: Finding
    target: str
    models: list[str] = field(default_factory=list)


@dataclass
class Page:
    """Everything one page shows; ``columns`` names the optional matrix columns it has."""

    title: str
    targets: list[str]
    rows: list[MatrixRow] = field(default_factory=list)
    findings: list[PageFinding] = field(default_factory=list)
    unreached: list[PageFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)  # one line per run
    columns: tuple[str, ...] = ("pickle", "findings", "notes")
    diff: str = ""


def target_label(name: str, opset: int, exporter: str | None = None) -> str:
    """``caffe2 (opset 9)``; the exporter only when it is not the default one."""
    if not opset:  # a target that does not go through ONNX
        return name
    extra = f", {exporter} exporter" if exporter and exporter != "torchscript" else ""
    return f"{name} (opset {opset}{extra})"


def verdict(status: str, stages: Iterable[StageResult], pickle: dict[str, Any] | None,
            findings: Iterable[Finding]) -> str:
    """The status cell of one model at one target (the audit's ``AuditRow.bad`` rule)."""
    if status != "ok":
        return status
    broken = (any(stage.bad for stage in stages) or (pickle is not None and not pickle.get("ok", True))
              or any(f.severity is Severity.ERROR for f in findings))
    return "would break" if broken else "ok"


# ============================================================================== building pages


def page_from_report(report: Report) -> Page:
    """The page of one check run: a column group per target."""
    from modelcheck.report.terminal import summary_line, targets_of

    names = targets_of(report)
    labels = {name: target_label(name, report.opset if name == report.target else 0) for name in names}
    rows = []
    for model in report.models:
        mine = [f for f in report.findings if f.model == model.spec]
        results = {}
        for name, label in labels.items():
            stages = [s for s in model.stages if (s.target or report.target) == name]
            at = [f for f in mine if not f.targets or name in f.targets]
            results[label] = TargetResult(verdict(model.status, stages, model.pickle, at), stages, model.detail)
        rows.append(MatrixRow(model.spec, results, pickle=model.pickle, findings=mine,
                              notes=list(model.notes), parameters=model.parameters))
    findings = [PageFinding(f, ", ".join(labels[t] for t in f.targets if t in labels) or labels[report.target],
                            [f.model] if f.model else []) for f in report.findings]
    return Page("modelcheck report", list(labels.values()), rows, findings, [], list(report.notes),
                [summary_line(report)], ("pickle", "findings", "notes"), report.diff)


def page_from_audit(audit: Any) -> Page:
    """The page of one ``modelcheck audit`` (an :class:`modelcheck.audit.run.AuditReport`)."""
    from modelcheck.audit.run import summary_line

    profile = audit.profile
    label = target_label(profile.name, profile.opset, profile.exporter)
    rows = []
    for row in audit.rows:
        status = verdict(row.status, row.stages, row.pickle, row.findings)  # AuditRow.bad's rule
        notes = list(row.notes) + [f"network: {host}" for host in row.network]
        rows.append(MatrixRow(row.model, {label: TargetResult(status, list(row.stages), row.detail)},
                              pickle=row.pickle, findings=list(row.findings), unreached=list(row.unreached),
                              notes=notes, seconds=row.seconds, cached=row.cached, parameters=row.parameters))
    return Page(f"modelcheck audit {audit.target}", [label], rows,
                _by_construct(((f, row.model) for row in audit.rows for f in row.findings), label),
                _by_construct(((f, row.model) for row in audit.rows for f in row.unreached), label),
                list(audit.notes), [summary_line(audit)], ("pickle", "findings", "time", "notes", "unreached"))


def _by_construct(pairs: Iterable[tuple[Finding, str]], label: str) -> list[PageFinding]:
    """One entry per construct (code and place), with every model that contains it."""
    merged: dict[tuple[str, str, int, int], PageFinding] = {}
    for finding, model in pairs:
        loc = finding.location
        entry = merged.setdefault((finding.code, loc.path, loc.line, loc.column), PageFinding(finding, label))
        if model not in entry.models:
            entry.models.append(model)
    return sorted(merged.values(), key=lambda e: (e.finding.location.path, e.finding.location.line,
                                                  e.finding.location.column, e.finding.code))


def merge_pages(pages: Sequence[Page]) -> Page:
    """Join pages of runs at different targets: one row per model, one column group per target."""
    if len(pages) == 1:
        return pages[0]
    first = pages[0]
    targets = list(dict.fromkeys(t for page in pages for t in page.targets))
    rows: dict[str, MatrixRow] = {}
    for page in pages:
        for row in page.rows:
            if row.model not in rows:
                rows[row.model] = MatrixRow(row.model, {}, row.pickle, list(row.findings), list(row.unreached),
                                            list(row.notes), row.seconds, row.cached, row.parameters)
            rows[row.model].results.update(row.results)
    columns = tuple(dict.fromkeys(c for page in pages for c in page.columns))
    return Page(first.title, targets, list(rows.values()), [f for p in pages for f in p.findings],
                [f for p in pages for f in p.unreached], list(dict.fromkeys(n for p in pages for n in p.notes)),
                [line for p in pages for line in p.summary], columns, "\n".join(p.diff for p in pages if p.diff))


def render_report(report: Report, *more: Report) -> str:
    """The HTML page of a check run (several reports: one per target, one matrix)."""
    return render_page(merge_pages([page_from_report(r) for r in (report, *more)]))


def render_audit(audit: Any, *more: Any) -> str:
    """The HTML page of an audit (several audits: one per target, one matrix)."""
    return render_page(merge_pages([page_from_audit(a) for a in (audit, *more)]))


# ============================================================================== HTML


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def _css_class(status: str) -> str:
    """ok (green), skip (grey) or bad (red): every other status is a way to fail."""
    if status in ("ok", "passed"):
        return "ok"
    if status in ("skipped", "-", ""):
        return "skip"
    return "bad"


def _rank(css: str) -> int:
    return {"bad": 0, "warn": 1, "ok": 2, "skip": 3}.get(css, 4)


def _td(content: str, css: str = "", sort: Any = None, title: str = "") -> str:
    attrs = (f' class="{css}"' if css else "") + (f' data-sort="{esc(sort)}"' if sort is not None else "")
    attrs += f' title="{esc(title)}"' if title else ""
    return f"<td{attrs}>{content}</td>"


def _badge(text: str, css: str) -> str:
    return f'<span class="badge {css}">{esc(text)}</span>'


def _more(summary: str, items: Sequence[str], *, pre: bool = False) -> str:
    """A ``<details>`` list: readable without JS, closed until clicked. ``items`` are plain text."""
    if not items:
        return ""
    body = "".join(f"<li>{'<code>' if pre else ''}{esc(i)}{'</code>' if pre else ''}</li>" for i in items)
    return f'<details class="more"><summary>{esc(summary)}</summary><ul>{body}</ul></details>'


def _stage_names(rows: Sequence[MatrixRow], label: str) -> list[str]:
    seen = [s.name for row in rows for s in (row.results.get(label) or TargetResult("")).stages]
    known = [name for name in STAGE_ORDER if name in seen]
    return known + [name for name in dict.fromkeys(seen) if name not in known]


def _stage_cell(stage: StageResult | None) -> str:
    if stage is None:
        return _td('<span class="none">–</span>', "skip", 9000)
    css = _css_class(stage.status)
    parts = [_badge(stage.status, css)]
    diff = stage.max_abs_diff
    if diff is not None:
        parts.append(f' <span class="diff" title="max abs diff vs PyTorch">Δ {esc(f"{diff:.3g}")}</span>')
    if stage.predicted_by:
        parts.append(f'<div class="pred">predicted by {" ".join(_code(c) for c in stage.predicted_by)}</div>')
    elif stage.bad:
        parts.append(f'<div class="unpred" title="no finding predicted this failure">{UNPREDICTED}</div>')
    if stage.detail:
        seconds = f"{stage.seconds:.2f} s: " if stage.seconds is not None else ""
        parts.append(f'<details class="more"><summary>detail</summary><div class="detail">{esc(seconds)}'
                     f"{esc(stage.detail)}</div></details>")
    sort = _rank(css) * 1000 - min(diff or 0.0, 999.0)
    return _td("".join(parts), f"st {css}", f"{sort:.6g}")


def _code(code: str) -> str:
    return f'<code class="code">{esc(code)}</code>'


def _pickle_cell(pickle: dict[str, Any] | None) -> str:
    if pickle is None:
        return _td('<span class="none">–</span>', "skip", 3)
    if pickle.get("ok"):
        return _td(_badge("ok", "ok"), "st ok", 2)
    failures = pickle.get("failures", [])
    items = [f"{f.get('path')}: {f.get('type')} defined at {f.get('defined_at')}" for f in failures]
    content = _badge(f"FAILS ({len(failures) or '?'})", "bad") + _more("attributes", items, pre=True)
    return _td(content, "st bad", 0)


def _findings_cell(findings: Sequence[Finding]) -> str:
    if not findings:
        return _td('<span class="none">–</span>', "", 0)
    counts = Counter((f.code, f.severity.value) for f in findings)
    chips = [f'<span class="chip sev-{esc(sev)}" title="{esc(sev)}">{esc(code)}{f"×{n}" if n > 1 else ""}</span>'
             for (code, sev), n in sorted(counts.items(), key=lambda kv: (_SEVERITY_ORDER[kv[0][1]], kv[0][0]))]
    errors = sum(f.severity is Severity.ERROR for f in findings)
    return _td(" ".join(chips), "", f"{errors * 1000 + len(findings)}")


def _unreached_cell(findings: Sequence[Finding]) -> str:
    if not findings:
        return _td('<span class="none">–</span>', "", 0)
    places = list(dict.fromkeys(f"{f.code} {_short(f.location.path)}:{f.location.line}" for f in findings))
    return _td(_more(f"{len(places)} not reached", places, pre=True), "", len(places))


def _matrix(page: Page) -> str:
    """The models × targets table: fixed columns, then a column group per target."""
    stages = {label: _stage_names(page.rows, label) for label in page.targets}
    head1, head2, columns = _matrix_head(page, stages)
    body = [_matrix_row(row, page, stages) for row in page.rows]
    if not body:
        body.append(f'<tr><td colspan="{columns}" class="empty">no model was built</td></tr>')
    return ('<div class="scroll"><table id="matrix" class="sortable">'
            f'<thead><tr>{"".join(head1)}</tr><tr>{"".join(head2)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _matrix_head(page: Page, stages: dict[str, list[str]]) -> tuple[list[str], list[str], int]:
    """The two header rows and the number of columns: fixed columns span both rows; each target's
    group has its status and stage columns below. ``data-col`` numbers the columns for sorting."""
    lead = [("model", "model")] + [(c, c) for c in page.columns if c in ("pickle", "findings")]
    tail = [(c, c) for c in page.columns if c in ("time", "notes", "unreached")]
    head1, head2 = [], []
    col = 0
    for key, text in lead:
        head1.append(f'<th rowspan="2" data-col="{col}" data-key="{key}" scope="col">{esc(text)}</th>')
        col += 1
    for t_index, label in enumerate(page.targets):
        head1.append(f'<th colspan="{1 + len(stages[label])}" class="target" scope="colgroup">{esc(label)}</th>')
        suffix = "" if t_index == 0 else f"@{t_index}"
        head2.append(f'<th data-col="{col}" data-key="status{suffix}" scope="col">status</th>')
        col += 1
        for name in stages[label]:
            head2.append(f'<th data-col="{col}" data-key="{esc(name)}{suffix}" scope="col">'
                         f"{esc(STAGE_LABELS.get(name, name))}</th>")
            col += 1
    for key, text in tail:
        head1.append(f'<th rowspan="2" data-col="{col}" data-key="{key}" scope="col">{esc(text)}</th>')
        col += 1
    return head1, head2, col


def _matrix_row(row: MatrixRow, page: Page, stages: dict[str, list[str]]) -> str:
    """One model's row: its fixed cells, then each target's status and stage cells."""
    cells = [_model_cell(row)]
    if "pickle" in page.columns:
        cells.append(_pickle_cell(row.pickle))
    if "findings" in page.columns:
        cells.append(_findings_cell(row.findings))
    for label in page.targets:
        cells.extend(_target_cells(row.results.get(label), stages[label]))
    if "time" in page.columns:
        text = "cached" if row.cached else (f"{row.seconds:.1f} s" if row.seconds is not None else "–")
        cells.append(_td(esc(text), "num", row.seconds if row.seconds is not None else -1))
    if "notes" in page.columns:
        cells.append(_td(_more(f"{len(row.notes)} note{'s' if len(row.notes) != 1 else ''}", row.notes)
                         or '<span class="none">–</span>', "", len(row.notes)))
    if "unreached" in page.columns:
        cells.append(_unreached_cell(row.unreached))
    return f'<tr data-model="{esc(row.model)}">{"".join(cells)}</tr>'


def _target_cells(result: TargetResult | None, stage_names: list[str]) -> list[str]:
    """One target's status cell (its detail shown short unless ok) and a cell per stage column;
    ``not run`` and empty stage cells when the model never reached this target."""
    if result is None:
        return [_td('<span class="none">not run</span>', "skip", 9), *(_stage_cell(None) for _ in stage_names)]
    css = _css_class(result.status)
    content = _badge(result.status, css)
    if result.detail and result.status not in ("ok", "would break"):
        content += f'<div class="detail short">{esc(_clip(result.detail, 160))}</div>'
    by_name = {s.name: s for s in result.stages}
    return [_td(content, f"st {css}", _rank(css), result.detail),
            *(_stage_cell(by_name.get(name)) for name in stage_names)]


def _model_cell(row: MatrixRow) -> str:
    extra = f'<div class="sub">{row.parameters:,} parameters</div>' if row.parameters is not None else ""
    return _td(f'<span class="model">{esc(row.model)}</span>{extra}', "modelcell", row.model)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------- findings


class _Sources:
    """Source files read at render time (once each), for the excerpts."""

    def __init__(self) -> None:
        self._cache: dict[str, list[str] | None] = {}

    def lines(self, path: str) -> list[str] | None:
        if path not in self._cache:
            try:
                text = Path(path).read_text(encoding="utf-8", errors="replace")
                self._cache[path] = text.splitlines()
            except (OSError, ValueError):
                self._cache[path] = None
        return self._cache[path]


def excerpt(finding: Finding, sources: _Sources | None = None, context: int = CONTEXT_LINES) -> str:
    """A few numbered source lines around the finding's line, that line highlighted and its
    construct marked; from the file as it is now (or the finding's own line if it cannot be read)."""
    loc = finding.location
    lines = (sources or _Sources()).lines(loc.path)
    if lines is None or not 1 <= loc.line <= len(lines):
        if not finding.source_line:
            return ""
        first, shown = loc.line, [finding.source_line]
    else:
        first = max(1, loc.line - context)
        shown = lines[first - 1: min(len(lines), loc.line + context)]
    width = len(str(first + len(shown) - 1))
    out = []
    for number, text in enumerate(shown, start=first):
        gutter = f'<span class="ln">{number:>{width}}</span>'
        if number != loc.line:
            out.append(f'<span class="line">{gutter}{esc(text)}</span>')
            continue
        start = max(loc.column - 1, 0)
        end = (loc.end_column - 1) if loc.end_line in (None, loc.line) and loc.end_column else len(text)
        end = max(min(end, len(text)), start + 1)
        marked = f"{esc(text[:start])}<mark>{esc(text[start:end])}</mark>{esc(text[end:])}"
        out.append(f'<span class="line hit" data-line="{number}">{gutter}{marked}</span>')
    return f'<pre class="src">{"".join(out)}</pre>'


def _findings_table(entries: Sequence[PageFinding], table_id: str, several_targets: bool) -> str:
    if not entries:
        return '<p class="none">none</p>'
    with_models = len({m for e in entries for m in e.models}) > 1  # one model: its name says nothing
    sources = _Sources()
    heads = ["severity", "code", "location", "message", "evidence", "fix"]
    heads += ["models"] if with_models else []
    heads += ["target"] if several_targets else []
    head = "".join(f'<th data-col="{i}" data-key="{h}" scope="col">{h}</th>' for i, h in enumerate(heads))
    rows = []
    for entry in entries:
        f, loc = entry.finding, entry.finding.location
        sev = f.severity.value
        place = f"{_short(loc.path)}:{loc.line}:{loc.column}"
        where = f'<div class="sub">in {esc(f.module_path)}</div>' if f.module_path else ""
        maybe = "" if f.certain else ' <span class="sub">(may)</span>'
        cells = [
            _td(_badge(sev, f"sev-{sev}"), "", _SEVERITY_ORDER[sev]),
            _td(_code(f.code)),
            _td(f"<code>{esc(place)}</code>", "loc", f"{_short(loc.path)}:{loc.line:08d}:{loc.column:05d}"),
            _td(f'<div class="msg">{esc(f.message)}{maybe}</div>{where}{excerpt(f, sources)}', "message"),
            _td(esc(f.evidence.value)),
            _td('<span class="fixable" title="modelcheck --fix rewrites it">[*] fixable</span>' if f.fixable
                else '<span class="none">–</span>', "", 0 if f.fixable else 1),
        ]
        if with_models:
            cells.append(_td("<br>".join(f'<span class="model">{esc(m)}</span>' for m in entry.models),
                             "", ", ".join(entry.models)))
        if several_targets:
            cells.append(_td(esc(entry.target)))
        rows.append(f'<tr data-severity="{esc(sev)}" data-code="{esc(f.code)}">{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="{table_id}" class="sortable findings"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _severity_filter(entries: Sequence[PageFinding]) -> str:
    counts = Counter(e.finding.severity.value for e in entries)
    boxes = "".join(
        f'<label class="sev-{s.value}"><input type="checkbox" id="show-{s.value}" checked> '
        f"{s.value} ({counts.get(s.value, 0)})</label>"
        for s in Severity
    )
    return (f'<div class="filter">show: {boxes} <span id="shown" class="sub">{len(entries)} of {len(entries)} '
            "shown</span></div>")


# ---------------------------------------------------------------------------- the page


def render_page(page: Page) -> str:
    several = len(page.targets) > 1
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    bad = sum(any(r.status not in ("ok", "skipped") for r in row.results.values()) for row in page.rows)
    cards = [
        ("models", len(page.rows), ""),
        ("would break", bad, "bad" if bad else "ok"),
        ("findings", len(page.findings), "warn" if page.findings else "ok"),
        ("errors", sum(e.finding.severity is Severity.ERROR for e in page.findings),
         "bad" if any(e.finding.severity is Severity.ERROR for e in page.findings) else "ok"),
    ]
    card_html = "".join(f'<div class="card {css}"><div class="n">{n}</div><div class="k">{esc(k)}</div></div>'
                        for k, n, css in cards)
    summary = "".join(f'<p class="summary-line">{esc(line)}</p>' for line in page.summary)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<meta name=\"generator\" content=\"modelcheck " + esc(__version__) + '">',
        f"<title>{esc(page.title)}</title><style>{_CSS}</style></head><body>",
        f'<header><h1>{esc(page.title)}</h1><div class="meta">target{"s" if several else ""}: '
        f'{", ".join(f"<b>{esc(t)}</b>" for t in page.targets)} · modelcheck {esc(__version__)} · {esc(when)}'
        "</div></header><main>",
        f'<section id="summary"><div class="cards">{card_html}</div>{summary}</section>',
        f'<section><h2>Models × target{"s" if several else ""}</h2>{_matrix(page)}'
        '<p class="hint">Click a column header to sort. Δ: max abs diff vs PyTorch; predicted by: the findings '
        f"that said so before export; {UNPREDICTED}: a failure no rule foresaw.</p></section>",
        f'<section><h2>Findings ({len(page.findings)})</h2>'
        + (_severity_filter(page.findings) if page.findings else "")
        + _findings_table(page.findings, "findings", several) + "</section>",
    ]
    if "unreached" in page.columns:
        parts.append(f'<section><h2>In the models\' files, not reached by them ({len(page.unreached)})</h2>'
                     '<p class="hint">Constructs in code no audited model ran while built or run: they do not '
                     "make a model break.</p>" + _findings_table(page.unreached, "unreached", several) + "</section>")
    if page.notes:
        parts.append(f'<section id="notes"><h2>Notes ({len(page.notes)})</h2><ul class="notes">'
                     + "".join(f"<li>{esc(n)}</li>" for n in page.notes) + "</ul></section>")
    if page.diff:
        parts.append('<section><h2>Diff (what --fix would write)</h2>'
                     f'<pre class="diff">{esc(page.diff)}</pre></section>')
    parts.append(f"</main><footer>{summary}</footer><script>{_JS}</script></body></html>")
    return "\n".join(parts) + "\n"


_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--ok:#1a7f37;--ok-bg:#dafbe1;--bad:#cf222e;
--bad-bg:#ffebe9;--warn:#9a6700;--warn-bg:#fff8c5;--skip:#59636e;--skip-bg:#eff2f5;--info:#0969da;--info-bg:#ddf4ff;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono","Liberation Mono",monospace}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:var(--bg)}
header{background:#24292f;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600;overflow-wrap:anywhere}
header .meta{color:#c9d1d9;font-size:13px;margin-top:2px}
main{padding:16px 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin-bottom:16px}
h2{font-size:16px;margin:0 0 10px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:6px}
.card{border:1px solid var(--line);border-radius:8px;padding:6px 16px;min-width:110px;background:var(--bg)}
.card .n{font-size:22px;font-weight:700}.card .k{color:var(--muted);font-size:12px}
.card.ok .n{color:var(--ok)}.card.bad .n{color:var(--bad)}.card.warn .n{color:var(--warn)}
.summary-line{font-weight:600;margin:6px 0 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
thead th{background:#eef1f4;font-weight:600;white-space:nowrap}
th.target{text-align:center;background:#e2e8ef}
th[data-col]{cursor:pointer;user-select:none}
th[data-col]:hover{background:#dde3ea}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending]::after{content:" \\25BC";font-size:10px}
td.st,td.num{white-space:nowrap}
td.modelcell{min-width:16em}
td.st.ok{background:#f0fbf3}td.st.bad{background:#fff5f4}td.st.warn{background:#fffbe6}td.st.skip{background:#fafbfc}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-weight:600;font-size:12px;line-height:20px;
border:1px solid transparent}
.badge.ok{background:var(--ok-bg);color:var(--ok);border-color:#aceebb}
.badge.bad{background:var(--bad-bg);color:var(--bad);border-color:#ffcecb}
.badge.warn{background:var(--warn-bg);color:var(--warn);border-color:#f5e0a0}
.badge.skip{background:var(--skip-bg);color:var(--skip)}
.badge.sev-error{background:var(--bad);color:#fff}.badge.sev-warning{background:#d4a72c;color:#fff}
.badge.sev-info{background:var(--info);color:#fff}
.chip{display:inline-block;font:12px var(--mono);padding:0 5px;border-radius:4px;margin:1px 0;border:1px solid}
.chip.sev-error{color:var(--bad);border-color:#ffcecb;background:var(--bad-bg)}
.chip.sev-warning{color:var(--warn);border-color:#f5e0a0;background:var(--warn-bg)}
.chip.sev-info{color:var(--info);border-color:#b6e3ff;background:var(--info-bg)}
.diff{font:12px var(--mono);color:var(--fg)}
.pred{font-size:12px;color:var(--muted);margin-top:2px}
.unpred{font-size:11px;font-weight:700;color:#fff;background:var(--bad);display:inline-block;padding:0 6px;
border-radius:3px;margin-top:3px;letter-spacing:.03em}
code,.code{font-family:var(--mono);font-size:12.5px}
.model{font-family:var(--mono);font-size:12.5px;font-weight:600;overflow-wrap:anywhere}
.sub,.none{color:var(--muted);font-size:12px}
.detail{font-size:12px;color:var(--muted);white-space:normal;max-width:40em;word-break:break-word}
.detail.short{max-width:28em;margin-top:2px}
details.more summary{cursor:pointer;color:var(--info);font-size:12px}
details.more ul{margin:4px 0;padding-left:18px;font-size:12px;white-space:normal}
td.message{min-width:28em}
.msg{margin-bottom:4px}
td.loc code{white-space:nowrap}
pre.src{margin:4px 0 0;background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:4px 0;
font:12.5px/1.5 var(--mono);overflow-x:auto;width:0;min-width:100%}
pre.src .line{display:block;padding:0 10px 0 0;white-space:pre}
pre.src .ln{display:inline-block;color:#8c959f;text-align:right;padding:0 10px;margin-right:8px;
border-right:1px solid var(--line);user-select:none}
pre.src .hit{background:#fff1c2}
pre.src .hit .ln{color:var(--fg);font-weight:700}
pre.src mark{background:#ffd33d;color:inherit;border-radius:2px;text-decoration:underline wavy var(--bad);
text-underline-offset:3px}
.fixable{color:var(--ok);font-weight:600;white-space:nowrap}
.filter{margin:0 0 8px;font-size:13px}
.filter label{margin-left:10px;cursor:pointer}
body:has(#show-error:not(:checked)) tr[data-severity=error],
body:has(#show-warning:not(:checked)) tr[data-severity=warning],
body:has(#show-info:not(:checked)) tr[data-severity=info]{display:none}
ul.notes{margin:0;padding-left:20px;font-size:13px}
ul.notes li{margin:2px 0;word-break:break-word}
pre.diff{font:12.5px var(--mono);background:#f6f8fa;padding:8px;overflow-x:auto;border-radius:6px}
.hint{color:var(--muted);font-size:12px;margin:8px 0 0}
td.empty{color:var(--muted);text-align:center}
footer{padding:0 24px 24px;color:var(--muted)}
footer .summary-line{font-weight:400}
@media print{th[data-col]{cursor:auto}.filter{display:none}}
"""

_JS = """
(function () {
  "use strict";
  function key(td) {
    var v = td ? td.getAttribute("data-sort") : "";
    return v === null ? td.textContent.trim() : v;
  }
  function compare(a, b) {
    var x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && !isNaN(x) && !isNaN(y)) return x - y;
    return a.localeCompare(b, undefined, {numeric: true, sensitivity: "base"});
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0], col = +th.getAttribute("data-col");
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[aria-sort]").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r, s) {
      var c = compare(key(r.cells[col]), key(s.cells[col]));
      return ascending ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("table.sortable th[data-col]").forEach(function (th) {
    th.tabIndex = 0;
    th.title = "sort by " + th.textContent.trim();
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
  function countShown() {
    var shown = document.getElementById("shown"), table = document.getElementById("findings");
    if (!shown || !table) return;
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var visible = rows.filter(function (r) { return getComputedStyle(r).display !== "none"; }).length;
    shown.textContent = visible + " of " + rows.length + " shown";
  }
  document.querySelectorAll(".filter input").forEach(function (box) {
    box.addEventListener("change", countShown);
  });
  var params = new URLSearchParams(location.hash.slice(1));
  (params.get("hide") || "").split(",").forEach(function (sev) {
    var box = sev && document.getElementById("show-" + sev);
    if (box) { box.checked = false; box.removeAttribute("checked"); }
  });
  (params.get("sort") || "").split(",").forEach(function (spec) {
    var i = spec.indexOf(":");
    if (i < 0) return;
    var name = spec.slice(i + 1), descending = name.charAt(0) === "-";
    if (descending) name = name.slice(1);
    var table = document.getElementById(spec.slice(0, i));
    var th = table && Array.prototype.find.call(table.querySelectorAll("th[data-key]"), function (h) {
      return h.getAttribute("data-key") === name;
    });
    if (th) { th.click(); if (descending) th.click(); }
  });
  countShown();
  document.documentElement.className += " js";
})();
"""
