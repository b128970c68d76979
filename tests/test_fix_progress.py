"""Fix verification keeps progress: a fixed model that gets further and then fails on another
construct keeps its fixes; only a fix whose own construct fails the smoke test is rolled back.

The fast tests judge stage results worded as the real runtimes word them (taken from real runs)
against fix groups planned by the real fixers on a real file; the slow ones run the whole
``--fix --unsafe-fixes`` on research-style fixtures through torch.onnx, ONNX Runtime and Caffe2.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import require_caffe2
from modelcheck.config import Config
from modelcheck.findings import Location, StageResult
from modelcheck.fix.records import FixRecord, FixStatus, summarize
from modelcheck.fix.run import (
    Edits,
    SeenStage,
    _lines_before_fix,
    _with_origin,
    blame,
    fix_groups,
    make_plans,
    progress_note,
)
from modelcheck.fixers.base import Applicability, FixContext
from modelcheck.static.run import check_source
from modelcheck.targets import make_target

MODELCHECK = Path(sys.executable).with_name("modelcheck")
FIXTURES = Path(__file__).parent / "fixtures" / "fix_progress"

NET = '''import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(self.pool(self.up(self.conv(x))))
'''
UP_LINE, POOL_LINE, HEAD_LINE = 8, 9, 10

#: stage details as the smoke test words them (from real runs of the fixtures below)
EXPORT_ALIGN_CORNERS = ("SymbolicValueError: Unsupported: ONNX export of operator upsample_bilinear2d, "
                        "align_corners == True.")
EXPORT_FMOD = ("UnsupportedOperatorError: Exporting the operator 'aten::fmod' to ONNX opset version 9 is not "
               "supported.")
CAFFE2_REDUCE_PROD = ("during conversion: Don't know how to translate op ReduceProd (ONNX node /norm/ReduceProd, "
                      "op ReduceProd)")
CAFFE2_POW = ("during the run: RuntimeError: [enforce fail at pow_op.h:97] A.sizes() == B.sizes(). [1, 8, 16, 16] "
              "vs []. Dimension mismatch - did you forget to set broadcast=1? (Caffe2 op Pow)")
CAFFE2_SHAPE = "output 0: shape 1×1×28×28, PyTorch 1×1×32×32"


@pytest.fixture
def planned(tmp_path: Path) -> tuple[Path, Edits]:
    """NET's MC202 (upsampling) and MC301 (pooling) edits, planned and written as --fix writes them."""
    path = tmp_path / "net.py"
    path.write_text(NET)
    findings = check_source(str(path), NET, make_target("caffe2"), Config())
    plans = make_plans({str(path): NET}, findings, FixContext("caffe2", 9), unsafe=True, verifiable=True)
    path.write_text(plans[0].fixed)
    edits = {id(edit): (plan, edit) for plan in plans for edit in plan.chosen}
    assert sorted((edit.code, edit.line) for _, edit in edits.values()) == [("MC202", UP_LINE), ("MC301", POOL_LINE)]
    return path, edits


def _seen(name: str, status: str, detail: str = "", *, location: Location | None = None,
          predicted_by: tuple[str, ...] = ()) -> SeenStage:
    if location is not None:
        detail = f"{detail} (at {location.path}:{location.line})"  # as the smoke test appends it
    return SeenStage.of(StageResult("net.py:Net", name, status, detail=detail, predicted_by=predicted_by,
                                    location=location, target="caffe2"))


def _fixed_line(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


class _Before:
    """The smoke test of the model without its fixes, as ``blame`` asks for it; counts the asking."""

    def __init__(self, *stages: SeenStage) -> None:
        self.stages, self.asked = {seen.key: seen for seen in stages}, 0

    def __call__(self) -> dict[tuple[str, str], SeenStage]:
        self.asked += 1
        return self.stages


EXPORT_FAILED_BEFORE = _Before(_seen("export", "failed", EXPORT_ALIGN_CORNERS), _seen("caffe2", "skipped"))


def test_the_operator_and_node_are_read_from_each_runtimes_words() -> None:
    assert (_seen("export", "failed", EXPORT_ALIGN_CORNERS).op, _seen("export", "failed", EXPORT_FMOD).op) == (
        "upsample_bilinear2d", "fmod")
    conversion = _seen("caffe2", "failed", CAFFE2_REDUCE_PROD)
    assert (conversion.op, conversion.node) == ("ReduceProd", "/norm/ReduceProd")
    assert (_seen("caffe2", "failed", CAFFE2_POW).op, _seen("caffe2", "failed", CAFFE2_POW).node) == ("Pow", None)
    assert _seen("caffe2", "mismatch", CAFFE2_SHAPE).op is None and _seen("caffe2", "passed", CAFFE2_POW).op is None


def test_groups_are_by_family_with_what_their_findings_predicted(planned: tuple[Path, Edits]) -> None:
    path, edits = planned
    groups = {group.family: group for group in fix_groups(edits, set(edits))}
    assert set(groups) == {"upsampling", "pooling"}
    assert groups["upsampling"].meant == {("export", "failed")}  # MC202: the export refuses align_corners
    assert ("caffe2", "mismatch") in groups["pooling"].meant
    assert groups["upsampling"].places == {(str(path.resolve()), UP_LINE)}


def test_a_failure_of_another_construct_after_progress_keeps_every_fix(planned: tuple[Path, Edits]) -> None:
    path, edits = planned
    head = Location(str(path), _fixed_line(path, "self.head = nn.Conv2d"))
    back = _lines_before_fix(edits)
    after = [_with_origin(_seen("caffe2", "failed", CAFFE2_REDUCE_PROD, location=head), back)]
    assert after[0].at == (str(path.resolve()), HEAD_LINE,  # the fixed file's line, as it was before the fix
                           "        self.head = nn.Conv2d(8, 1, 1)")
    before = _Before(_seen("export", "failed", EXPORT_ALIGN_CORNERS), _seen("caffe2", "skipped"))
    assert blame(after, fix_groups(edits, set(edits)), before) == {}
    assert before.asked == 1  # the original was needed to tell progress from a regression


def test_a_predicted_failure_blames_no_fix_and_needs_no_comparison(planned: tuple[Path, Edits]) -> None:
    _, edits = planned
    before = _Before()
    after = [_seen("caffe2", "failed", CAFFE2_POW, predicted_by=("MC502",))]
    assert blame(after, fix_groups(edits, set(edits)), before) == {} and before.asked == 0


def test_the_fixs_own_operator_rolls_back_its_family_only(planned: tuple[Path, Edits]) -> None:
    _, edits = planned
    groups = fix_groups(edits, set(edits))
    blamed = blame([_seen("export", "failed", EXPORT_ALIGN_CORNERS)], groups, _Before())
    assert [group.family for group in blamed] == ["upsampling"]
    assert next(iter(blamed.values())).startswith("its own construct fails: export failed: SymbolicValueError")


def test_a_failure_in_code_the_fix_wrote_rolls_it_back_whatever_the_operator(planned: tuple[Path, Edits]) -> None:
    path, edits = planned
    helper = Location(str(path), _fixed_line(path, "torch.matmul(x, self._weights"))  # the inserted helper
    seen = _with_origin(_seen("caffe2", "failed", "during the run: RuntimeError: bad (Caffe2 op MatMul)",
                              location=helper), _lines_before_fix(edits))
    assert seen.at is not None and seen.at[:2] == (str(path.resolve()), None)  # no line of the original
    blamed = blame([seen], fix_groups(edits, set(edits)), _Before())
    assert [group.family for group in blamed] == ["upsampling"]  # its helper: the pooling fix wrote none of it
    (why,) = blamed.values()
    assert why.startswith("its own construct fails: caffe2 failed") and why.endswith("(in code the fix wrote)")


def test_a_placed_failure_names_its_line_before_the_fix(planned: tuple[Path, Edits]) -> None:
    path, edits = planned
    pool = Location(str(path), _fixed_line(path, "self.head = nn.Conv2d"))
    seen = _with_origin(_seen("caffe2", "failed", CAFFE2_POW, location=pool), _lines_before_fix(edits))
    assert seen.failure().endswith(f"(Caffe2 op Pow) (at {path}:{HEAD_LINE})") and pool.line != HEAD_LINE


def test_a_stage_that_passed_without_the_fixes_and_fails_with_them_blames_them_all(planned: tuple[Path, Edits]) -> None:
    _, edits = planned
    before = _Before(_seen("export", "passed"), _seen("onnx_check", "passed"))
    blamed = blame([_seen("onnx_check", "failed", "ValidationError: bad graph")], fix_groups(edits, set(edits)), before)
    assert {group.family for group in blamed} == {"upsampling", "pooling"}
    assert all(why.startswith("the model passed onnx_check without the fixes") for why in blamed.values())


def test_a_stage_it_was_meant_to_repair_is_rolled_back_when_still_bad(planned: tuple[Path, Edits]) -> None:
    _, edits = planned
    groups = fix_groups(edits, set(edits))
    # no operator and no line: nothing names another construct
    blamed = blame([_seen("caffe2", "mismatch", CAFFE2_SHAPE)], groups, _Before())
    assert [group.family for group in blamed] == ["pooling"]
    # the export it was meant to repair still fails, on the very operator it failed on before
    before = _Before(_seen("export", "failed", EXPORT_FMOD))
    blamed = blame([_seen("export", "failed", EXPORT_FMOD)], groups, before)
    assert [group.family for group in blamed] == ["upsampling"]
    assert "it did not repair export, which fails as before" in next(iter(blamed.values()))
    # ...but a new operator in that stage is progress
    assert blame([_seen("export", "failed", EXPORT_FMOD)], groups, EXPORT_FAILED_BEFORE) == {}


def test_the_note_of_a_kept_fix_says_what_passes_now_and_where_it_fails_next(planned: tuple[Path, Edits]) -> None:
    path, edits = planned
    upsampling = next(group for group in fix_groups(edits, set(edits)) if group.family == "upsampling")
    located = Location(str(path), 27)
    stages = [_seen("export", "passed"), _seen("onnxruntime", "passed"),
              _seen("caffe2", "failed", CAFFE2_REDUCE_PROD, location=located)]
    assert progress_note(upsampling, stages) == (
        f"the fixed model now exports; then caffe2 fails on ReduceProd at {path}:27 (UNPREDICTED by any "
        "finding; ONNX node /norm/ReduceProd): not the code this fix rewrote, so the fix is kept")
    predicted = [_seen("export", "passed"), _seen("caffe2", "failed", CAFFE2_POW, location=located,
                                                  predicted_by=("MC502",))]
    assert f"then caffe2 fails on Pow at {path}:27 (predicted by MC502)" in progress_note(upsampling, predicted)


def test_kept_fixes_share_one_note_and_write_it_to_json() -> None:
    note = "the fixed model now exports; then caffe2 fails on Pow at m.py:30 (predicted by MC502): ..."
    records = [FixRecord("m.py", code, line, FixStatus.APPLIED, "", "up", Applicability.UNSAFE, True, note)
               for code, line in (("MC202", 4), ("MC203", 4), ("MC202", 9))]
    assert records[0].to_json()["note"] == note
    assert "note" not in replace(records[0], note="").to_json()  # the keys a record always had, when there is none
    notes = summarize(records, dry_run=False, verifiable=True)
    assert [n for n in notes if n.startswith("kept:")] == [f"kept: m.py:4, m.py:9: {note}"]


# ----- the real thing -----------------------------------------------------------------------------

def _fix(folder: Path, name: str, cls: str, shape: str, *flags: str) -> dict:
    result = subprocess.run(
        [str(MODELCHECK), name, "--model", f"{name}:{cls}", "--input-shape", shape, "--format", "json",
         "--fix", "--unsafe-fixes", *flags], cwd=folder, capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.caffe2
@pytest.mark.parametrize("select", [("--select", "MC2"), ()], ids=["only-upsampling-rules", "every-rule"])
def test_a_fix_that_gets_further_is_kept_and_the_next_failure_is_reported_at_its_line(tmp_path, select):
    """R3Net's case: the fixed upsampling exports, then Caffe2 fails on another construct (``std``)."""
    require_caffe2()
    shutil.copy(FIXTURES / "saliency.py", tmp_path / "saliency.py")
    report = _fix(tmp_path, "saliency.py", "SaliencyNet", "1,3,32,32", *select)
    fixed = (tmp_path / "saliency.py").read_text()
    assert "class _ExactBilinearUpsample" in fixed  # the upsampling fixes stay
    assert "F.interpolate(high" not in fixed and "F.interpolate(out" not in fixed
    upsampling = [f for f in report["fixes"] if f["code"] in ("MC202", "MC203")]
    assert len(upsampling) == 4 and all(f["status"] == "applied" and f["verified"] for f in upsampling)

    stages = {s["name"]: s for s in report["stages"]}
    assert stages["export"]["status"] == "passed" and stages["onnxruntime"]["status"] == "passed"
    caffe2 = stages["caffe2"]
    line = _fixed_line(tmp_path / "saliency.py", "x.std(dim=1")
    assert caffe2["status"] == "failed" and "ReduceProd" in caffe2["detail"]
    assert caffe2["location"]["path"] == "saliency.py" and caffe2["location"]["line"] == line  # its own line
    # as the finding that predicts it (the operator rules, MC5xx), else UNPREDICTED with its ONNX node
    assert not (select and caffe2["predicted_by"])
    why = (f"predicted by {', '.join(caffe2['predicted_by'])}" if caffe2["predicted_by"]
           else "UNPREDICTED by any finding; ONNX node /norm/ReduceProd")
    note = re.compile(rf"the fixed model now exports.*; then caffe2 fails on ReduceProd at saliency\.py:{line} "
                      rf"\({re.escape(why)}.*\): not the code this fix rewrote, so the fix is kept")
    assert all(note.fullmatch(f.get("note", "")) for f in upsampling), upsampling[0].get("note")
    assert any(n.startswith("kept: saliency.py:") and note.search(n) for n in report["notes"]), report["notes"]


REFINE = '''import torch.nn as nn


class Refine(nn.Module):
    def __init__(self):
        super(Refine, self).__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding='same')
        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(self.up(self.conv(x)))
'''


@pytest.mark.slow
@pytest.mark.caffe2
def test_a_fix_whose_stage_is_still_bad_with_nothing_else_named_is_rolled_back(tmp_path):
    """The upsampling fix (MC201) was meant to repair Caffe2's mismatch; with only the upsampling
    rules on, nothing names the ``padding='same'`` conv that still makes Caffe2 mismatch, so the fix
    cannot be shown to help and is undone byte for byte, saying why."""
    require_caffe2()
    net = tmp_path / "refine.py"
    net.write_text(REFINE)
    report = _fix(tmp_path, "refine.py", "Refine", "1,3,16,16", "--select", "MC2")
    assert net.read_text() == REFINE
    (fix,) = report["fixes"]
    assert (fix["code"], fix["status"]) == ("MC201", "rolled_back")
    assert fix["reason"].startswith("smoke test of the fixed model: a stage it was meant to repair is still bad: "
                                    "caffe2 mismatch: output 0: shape"), fix["reason"]


@pytest.mark.slow
@pytest.mark.caffe2
def test_what_tracing_cleared_stays_cleared_after_the_fix_rewrote_its_line(tmp_path: Path) -> None:
    """The ASPP image-pooling line is rewritten by other fixes (MC205's rename, MC601's mean), and the
    re-check of the fixed file must not bring back the MC201/MC203 tracing cleared there (R3Net's
    --fix run ended with those two errors and exit 1). The decoder's unsafe fix holds the traced size:
    measured at a second size, said in a note."""
    require_caffe2()
    shutil.copy(FIXTURES / "aspp.py", tmp_path / "aspp.py")
    lines = (FIXTURES / "aspp.py").read_text().splitlines()
    image = next(i for i, text in enumerate(lines, 1) if text.endswith("# marker: image"))
    done = subprocess.run([str(MODELCHECK), "aspp.py", "--model", "aspp.py:ASPPHead", "--input-shape", "1,3,32,32",
                           "--format", "json", "--fix", "--unsafe-fixes"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    report = json.loads(done.stdout)
    assert {(f["code"], f["line"]) for f in report["fixes"] if f["status"] == "applied"} >= {
        ("MC205", image), ("MC601", image), ("MC201", image + 2)}, report["fixes"]
    assert not [f for f in report["findings"] if f["severity"] == "error"], report["findings"]
    assert {s["name"]: s["status"] for s in report["stages"]} == {
        "export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}, report["stages"]
    assert any("holds for the traced input size only" in note and "at a second size it" in note
               for note in report["notes"]), report["notes"]
    assert done.returncode == 0
    fixed = (tmp_path / "aspp.py").read_text()
    assert "F.interpolate(self.image(" in fixed and ".mean((-2, -1), keepdim=True)" in fixed
