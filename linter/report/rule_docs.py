"""The rules' documentation, rendered from the rules themselves: one source, several outputs.

Each rule documents itself once, in its class docstring (ruff's sections, see
:data:`modelcheck.rules.base.DOC_SECTIONS`), with its examples as class attributes the tests run.
From that come ``modelcheck --explain CODE`` (:meth:`Rule.markdown`), SARIF rule help
(:mod:`modelcheck.report.sarif`), ``--list-rules`` (:func:`rule_rows`), README.md's rule table
(:func:`markdown_table`) and docs/rules.md (:func:`rules_page`); ``scripts/rule_table.py``
writes the last two and tests/test_rule_docs.py fails when they are stale.
"""

from __future__ import annotations

from modelcheck.rules import ALL_RULES, PSEUDO_CODES, SYNTAX_ERROR
from modelcheck.rules.base import Rule
from modelcheck.targets import PROFILES as TARGET_PROFILES
from modelcheck.targets import make_target

#: opsets worth a column besides a target's default (where the ONNX rules change their verdict)
_MORE_OPSETS = {"caffe2": (11,), "onnx": (9,)}


def _columns() -> tuple[tuple[str, str, int | None], ...]:
    """(column label, target name, opset or None) for every target: its default, and the opsets above."""
    columns = []
    for name, profile in TARGET_PROFILES.items():
        if not profile.onnx:
            columns.append((name, name, None))
            continue
        for opset in sorted({profile.default_opset, *_MORE_OPSETS.get(name, ())}):
            columns.append((f"{name}, opset {opset}", name, opset))
    onnx_first = sorted(columns, key=lambda c: (c[2] is None, c[1] not in ("caffe2", "onnx")))
    return tuple(onnx_first)


#: the targets a rule table shows a severity for: (column label, target name, opset), from the profiles
PROFILES: tuple[tuple[str, str, int | None], ...] = _columns()
#: a target where the rule's construct is harmless (it does not fire there)
HARMLESS = "-"
#: codes a stage reports without a rule class: their names (summaries: ``PSEUDO_CODES``)
PSEUDO_NAMES = {SYNTAX_ERROR: "syntax-error"}


def verdicts(rule: Rule) -> list[str]:
    """The rule's severity at each of :data:`PROFILES`, or :data:`HARMLESS`."""
    cells = []
    for _, name, opset in PROFILES:
        severity = rule.verdict(make_target(name, opset))
        cells.append(severity.value if severity is not None else HARMLESS)
    return cells


def rule_rows() -> list[tuple[str, ...]]:
    """(code, name, severity per profile..., summary) for every code, MC000 first."""
    rows: list[tuple[str, ...]] = [
        (code, PSEUDO_NAMES.get(code, ""), *(["error"] * len(PROFILES)), summary)
        for code, summary in sorted(PSEUDO_CODES.items())
    ]
    rows.extend((rule.code, rule.name, *verdicts(rule), rule.summary) for rule in ALL_RULES)
    return rows


def tab_lines() -> str:
    """``--list-rules`` in a pipe: one ``code<TAB>name<TAB>summary`` line per code, never cut."""
    return "".join(f"{row[0]}\t{row[1]}\t{row[-1]}\n" for row in rule_rows())


def markdown_table() -> str:
    """README.md's rule table."""
    head = ["code", "name", *(label for label, _, _ in PROFILES), "what"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for code, name, *cells, summary in rule_rows():
        link = f"[{code}](docs/rules.md#{code.lower()})" if code not in PSEUDO_CODES else code
        lines.append("| " + " | ".join([link, name, *cells, _cell(summary)]) + " |")
    return "\n".join(lines) + "\n"


def rules_page() -> str:
    """docs/rules.md: every rule's whole documentation, as ``--explain`` prints it."""
    intro = ("# Rules\n\n"
             "Generated from the rules' docstrings by `scripts/rule_table.py` (do not edit by hand);\n"
             "`modelcheck --explain CODE` prints the same. Severities per target: the table in\n"
             "[README.md](../README.md#rules).\n")
    pages = [_demoted(rule.markdown(), rule.code) for rule in ALL_RULES]
    return intro + "".join(f"\n{page}" for page in pages)


def _demoted(markdown: str, code: str) -> str:
    """One rule's page one heading level down, its title anchored by its code (``#mc201``)."""
    lines = markdown.splitlines()
    title, rest = lines[0], lines[1:]
    out = [f'<a id="{code.lower()}"></a>', "", "#" + title]
    out.extend(("#" + line) if line.startswith("## ") else line for line in rest)
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
