"""Tracing settles what the source left open: a static "may" finding is refuted, confirmed or kept.

The fixture (tests/fixtures/refute/switchable.py) takes its upsampling mode, pooling ceil_mode and
a side branch from constructor arguments; it is built, walked and traced for real in a child
process. Expected lines come from markers in the fixture text, never from modelcheck.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from modelcheck.cli.main import app
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Severity
from modelcheck.static.run import check_source
from modelcheck.targets import make_target
from modelcheck.trace.run import Observation, refute
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures" / "refute"
MODEL = "switchable.py:Switchable"


def marker_line(name: str) -> int:
    lines = (FIXTURES / "switchable.py").read_text().splitlines()
    (line,) = [i for i, text in enumerate(lines, 1) if text.endswith(f"# marker: {name}")]
    return line


def run(model_args: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``modelcheck switchable.py --model ... --format json`` in-process, from the fixture folder."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(FIXTURES)
        result = CliRunner().invoke(app, [
            "switchable.py", "--model", MODEL, "--model-args", json.dumps(model_args),
            "--input-shape", "1,3,16,16", "--no-smoke", "--format", "json",
        ])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    report = json.loads(result.stdout)
    assert [m["status"] for m in report["models"]] == ["ok"], report["models"]
    return result.exit_code, report


def at(report: dict[str, Any], line: int) -> list[tuple[str, str, str, bool]]:
    return [(f["code"], f["severity"], f["evidence"], f["certain"])
            for f in report["findings"] if f["path"] == "switchable.py" and f["line"] == line]


def test_the_source_alone_leaves_all_three_constructs_open() -> None:
    """Without this the refutation tests below could pass by the static pass finding nothing."""
    text = (FIXTURES / "switchable.py").read_text()
    found = check_source("switchable.py", text, make_target("caffe2"), Config())
    assert sorted((f.location.line, f.code, f.severity, f.certain) for f in found) == [
        (marker_line("pool"), "MC301", Severity.INFO, False),
        (marker_line("up"), "MC201", Severity.WARNING, False),
        (marker_line("side"), "MC201", Severity.WARNING, False),
    ]


@pytest.fixture(scope="module")
def nearest() -> tuple[int, dict[str, Any]]:
    """Built with mode='nearest', ceil_mode=False and the side branch taken."""
    return run({"mode": "nearest", "ceil": False, "side": True})


@pytest.fixture(scope="module")
def bilinear() -> tuple[int, dict[str, Any]]:
    """Built with mode='bilinear', ceil_mode=True; the side branch is never taken."""
    return run({"mode": "bilinear", "ceil": True, "side": False})


@pytest.mark.slow
def test_harmless_values_seen_by_tracing_refute_the_may_findings(nearest: tuple[int, dict[str, Any]]) -> None:
    code, report = nearest
    assert report["findings"] == []
    assert code == 0
    refuted = [n for n in report["notes"] if "refuted by tracing" in n]
    assert refuted == [
        f"MC301 at switchable.py:{marker_line('pool')} refuted by tracing: MaxPool2d(ceil_mode=False) in model {MODEL}",
        f"MC201 at switchable.py:{marker_line('up')} refuted by tracing: "
        f"Upsample(mode='nearest', align_corners=None) in model {MODEL}",
        # a functional call in forward, seen by graph capture rather than the module walk
        f"MC201 at switchable.py:{marker_line('side')} refuted by tracing: "
        f"F.interpolate(mode='nearest', align_corners=None) in model {MODEL}",
    ]


@pytest.mark.slow
def test_values_confirmed_by_tracing_make_one_certain_finding(bilinear: tuple[int, dict[str, Any]]) -> None:
    code, report = bilinear
    assert at(report, marker_line("up")) == [("MC201", "error", "both", True)]
    (up,) = [f for f in report["findings"] if f["line"] == marker_line("up")]
    assert "mode='bilinear'" in up["message"] and "may" not in up["message"]
    assert at(report, marker_line("pool")) == [("MC301", "warning", "both", True)]
    assert code == 1
    assert not [n for n in report["notes"] if "refuted" in n]


@pytest.mark.slow
def test_a_branch_forward_never_takes_keeps_its_static_finding(bilinear: tuple[int, dict[str, Any]]) -> None:
    """Not seen is not harmless: the traced model never ran the side branch, so nothing is settled."""
    _, report = bilinear
    assert at(report, marker_line("side")) == [("MC201", "warning", "static", False)]
    (side,) = [f for f in report["findings"] if f["line"] == marker_line("side")]
    assert side["message"].startswith("F.interpolate(mode unknown) may interpolate linearly")


@pytest.mark.slow
@pytest.mark.parametrize("used", [False, True])
def test_a_layer_forward_never_calls_is_not_in_the_export(used: bool) -> None:
    """Caffe2 cannot run LayerNorm (MC502, measured), but a LayerNorm built and never called is not
    exported: tracing drops the static finding with a note. Called, it stays, confirmed by tracing."""
    fixture = FIXTURES / "unused_layer.py"
    (line,) = [i for i, text in enumerate(fixture.read_text().splitlines(), 1) if text.endswith("# marker: ln")]
    static = check_source("unused_layer.py", fixture.read_text(), make_target("caffe2"), Config())
    assert [(f.code, f.location.line) for f in static] == [("MC502", line)]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(FIXTURES)
        result = CliRunner().invoke(app, ["unused_layer.py", "--model", "unused_layer.py:Block", "--model-args",
                                          json.dumps({"used": used}), "--input-shape", "1,3,32,32", "--no-smoke",
                                          "--format", "json"])
    report = json.loads(result.stdout)
    found = [(f["code"], f["evidence"]) for f in report["findings"] if f["line"] == line]
    refuted = [n for n in report["notes"] if "refuted by tracing" in n]
    if used:
        assert found == [("MC502", "both")] and not refuted
    else:
        assert found == [] and refuted == [f"MC502 at unused_layer.py:{line} refuted by tracing: nn.LayerNorm, built "
                                           "but never called by forward in model unused_layer.py:Block"]


# ----- refute() on plain data: what counts as the same construct ----------------------------------

def _static(code: str, line: int, column: int, certain: bool = False) -> Finding:
    return Finding(code, "may", Severity.WARNING, Location("m.py", line, column), certain=certain)


def _seen(family: str, line: int, column: int, end_column: int | None, fires: set[str], model: str = "m.py:Net",
          path: str = "m.py") -> Observation:
    return Observation(family, str(Path(path).resolve()), line, column, line if end_column else None, end_column,
                       model, "Upsample(mode='nearest', align_corners=None)", frozenset(fires))


def test_refute_needs_an_uncertain_finding_a_covering_sighting_of_its_family_and_no_sighting_firing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    findings = [
        _static("MC201", 3, 10),                 # seen harmless by two models: refuted
        _static("MC201", 4, 10, certain=True),   # the source was sure: tracing one model does not overrule it
        _static("MC201", 5, 10),                 # harmless in one model, fires in another: kept
        _static("MC201", 6, 10),                 # only a pooling construct seen on the line: kept
        _static("MC201", 7, 30),                 # only another call on the same line seen: kept
        _static("MC201", 8, 10),                 # never seen: kept
    ]
    observed = [
        _seen("upsampling", 3, 10, 40, set()), _seen("upsampling", 3, 10, 40, set(), model="m.py:Other"),
        _seen("upsampling", 4, 10, 40, set()),
        _seen("upsampling", 5, 10, 40, set()), _seen("upsampling", 5, 10, 40, {"MC201"}, model="m.py:Other"),
        _seen("pooling", 6, 10, 40, set()),
        _seen("upsampling", 7, 5, 20, set()),
    ]
    kept, notes = refute(findings, observed)
    assert [f.location.line for f in kept] == [4, 5, 6, 7, 8]
    assert notes == ["MC201 at m.py:3 refuted by tracing: Upsample(mode='nearest', align_corners=None) in model "
                     "m.py:Net; Upsample(mode='nearest', align_corners=None) in model m.py:Other"]


def test_a_certain_finding_is_dropped_only_when_every_sighting_clears_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Rule.cleared_by``: facts only tracing knows (a 1×1 input) settle even what the source was sure of."""
    monkeypatch.chdir(tmp_path)
    findings = [_static("MC201", 3, 10, certain=True), _static("MC201", 4, 10, certain=True)]
    one_pixel = replace(_seen("upsampling", 3, 10, 40, set()), cleared=frozenset({"MC201", "MC203"}))
    observed = [one_pixel, replace(one_pixel, line=4, end_line=4),
                replace(_seen("upsampling", 4, 10, 40, {"MC201"}), model="m.py:Other")]
    kept, notes = refute(findings, observed)
    assert [f.location.line for f in kept] == [4]  # another model calls it on a larger map
    assert len(notes) == 1 and notes[0].startswith("MC201 at m.py:3 refuted by tracing")


# ----- static: a hook registered on a subscripted or called expression ------------------------------

HOOKS = '''\
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3, 1))
        self.body[0].register_forward_hook(lambda m, i, o: None)
        self.body[0].inner.register_forward_pre_hook(lambda m, i: None)
        self.layer(0).register_full_backward_hook(lambda m, gi, go: None)
        self.body[0].apply(lambda m: None)

    def forward(self, x):
        x[0].register_hook(lambda g: g)
        return self.body(x)
'''


def test_a_hook_lambda_on_a_subscripted_module_is_found() -> None:
    """``self.body[0].register_forward_hook(lambda ...)`` has no dotted callee; the method name decides."""
    found = check_source("hooks.py", HOOKS, make_target("caffe2"), Config())
    assert [(f.location.line, f.code, f.severity, f.certain) for f in found] == [
        (8, "MC101", Severity.ERROR, True), (9, "MC101", Severity.ERROR, True), (10, "MC101", Severity.ERROR, True),
    ]
    assert "passed to register_forward_hook()" in found[0].message
    # .apply(fn) calls fn and lets it go; Tensor.register_hook is not on a module: neither is a finding
