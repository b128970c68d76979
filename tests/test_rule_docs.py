"""Each rule is documented once, in its docstring (ruff's sections), and every place that shows
the documentation renders it from there: ``--explain``, SARIF rule help, README.md's rule table
and docs/rules.md (those two are generated files, checked here to be current)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from modelcheck.cli.main import app
from modelcheck.report.rule_docs import markdown_table, rule_rows, rules_page
from modelcheck.report.sarif import rule_descriptor
from modelcheck.rules import ALL_RULES, PSEUDO_CODES, SYNTAX_ERROR
from modelcheck.rules.base import DOC_SECTIONS, Rule
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rule_table.py"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: rule.code)
def test_every_rule_has_ruffs_sections(rule: Rule) -> None:
    doc = rule.doc()
    assert tuple(doc) == DOC_SECTIONS and all(doc.values())
    assert "rationale" not in vars(type(rule)), "the docstring is the one place a rule is documented"
    fix = doc["Fix safety"]
    assert re.search(r"\b(safe|unsafe)\b", fix, re.IGNORECASE) or "no automatic fix" in fix.lower(), \
        "Fix safety says how safe --fix is, or that there is no fix"


@pytest.mark.parametrize("rule", ALL_RULES, ids=lambda rule: rule.code)
def test_the_documented_examples_are_the_checked_ones(rule: Rule) -> None:
    """``## Example`` and ``Use instead:`` come from bad_example and good_example (tests run those)."""
    page = rule.markdown()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert blocks == [rule.bad_example.rstrip() + "\n", rule.good_example.rstrip() + "\n"]
    assert page.index("## Why is this bad?") < page.index("## Example") < page.index("Use instead:") \
        < page.index("## Fix safety")


def test_a_docstring_without_the_sections_is_refused() -> None:
    class Undocumented(Rule):
        """Flags something."""

    with pytest.raises(ValueError, match="section"):
        Undocumented.doc()

    class HalfDocumented(Rule):
        """## What it does
        Flags something.

        ## Fix safety
        Safe.
        """

    with pytest.raises(ValueError, match="sections"):
        HalfDocumented.doc()


def test_explain_prints_the_rule_documentation() -> None:
    rule = next(r for r in ALL_RULES if r.code == "MC201")
    result = CliRunner().invoke(app, ["--explain", "mc201"])
    assert result.exit_code == 0
    assert result.stdout.strip() == rule.markdown().strip()
    assert "0.93" in result.stdout  # the measured difference, from "Why is this bad?"


def test_sarif_help_is_the_same_documentation() -> None:
    rule = next(r for r in ALL_RULES if r.code == "MC301")
    descriptor = rule_descriptor(rule, "error")
    assert descriptor["help"]["markdown"].startswith(rule.markdown())
    assert descriptor["shortDescription"]["text"] == rule.summary


def test_list_rules_in_a_pipe_is_tab_separated_full_width_and_has_mc000() -> None:
    result = CliRunner().invoke(app, ["--list-rules"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"{SYNTAX_ERROR}\tsyntax-error\t{PSEUDO_CODES[SYNTAX_ERROR]}"
    assert [line.split("\t") for line in lines[1:]] == [[r.code, r.name, r.summary] for r in ALL_RULES]


def test_readme_rule_table_and_rules_page_are_current() -> None:
    """README.md's table and docs/rules.md are generated: ``python scripts/rule_table.py``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README.md's rule table is stale: run scripts/rule_table.py"
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == rules_page(), \
        "docs/rules.md is stale: run scripts/rule_table.py"
    assert len(rule_rows()) == len(ALL_RULES) + len(PSEUDO_CODES)


def test_the_script_says_when_the_docs_are_stale() -> None:
    check = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
