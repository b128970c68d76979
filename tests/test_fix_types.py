"""The types a fix is made of: Applicability and Exactness order as they read, choose() applies
by them, and a fix record writes the same JSON strings as before they were types."""

from __future__ import annotations

import pytest
from modelcheck.findings import Evidence, Finding, Location, Severity, StageResult, StageStatus
from modelcheck.fix.records import FixRecord, FixStatus, summarize
from modelcheck.fix.run import choose
from modelcheck.fixers.base import Applicability, Edit, Exactness


def test_applicability_orders_as_ruff_does() -> None:
    assert Applicability.DISPLAY_ONLY < Applicability.UNSAFE < Applicability.SAFE
    assert max(Applicability) is Applicability.SAFE and Applicability.SAFE >= Applicability.UNSAFE
    assert Applicability.least(unsafe_fixes=False) is Applicability.SAFE
    assert Applicability.least(unsafe_fixes=True) is Applicability.UNSAFE
    with pytest.raises(TypeError):
        _ = Applicability.SAFE < Exactness.BITWISE  # two scales do not compare


def test_exactness_says_what_a_model_must_show() -> None:
    assert Exactness.NUMERIC < Exactness.BITWISE < Exactness.BY_CONSTRUCTION
    assert [e.check for e in Exactness] == [Exactness.NUMERIC, Exactness.BITWISE, Exactness.BITWISE]
    assert [e.needs_model for e in Exactness] == [True, True, False]
    # several edits in one model's files: the check is the weakest any of them allows
    assert min(e.check for e in (Exactness.BY_CONSTRUCTION, Exactness.NUMERIC)) is Exactness.NUMERIC


def _edit(applicability: Applicability, exactness: Exactness) -> Edit:
    return Edit("MC301", 1, "pool", applicability, exactness, reason="exact at 33×33 only")


@pytest.mark.parametrize(("unsafe", "verifiable", "applied"), [
    (False, False, {"safe/by-construction"}),
    (False, True, {"safe/by-construction", "safe/numeric"}),
    (True, False, {"safe/by-construction", "unsafe/by-construction"}),
    (True, True, {"safe/by-construction", "safe/numeric", "unsafe/by-construction", "unsafe/numeric"}),
])
def test_choose_applies_by_applicability_and_holds_what_needs_a_model(unsafe: bool, verifiable: bool,
                                                                      applied: set[str]) -> None:
    edits = [_edit(a, e) for a in Applicability for e in (Exactness.NUMERIC, Exactness.BY_CONSTRUCTION)]
    chosen, held = choose(edits, unsafe=unsafe, verifiable=verifiable)
    assert {f"{e.applicability.value}/{e.exactness.value}" for e in chosen} == applied
    assert len(chosen) + len(held) == len(edits)
    display_only = [held[id(e)] for e in edits if e.applicability is Applicability.DISPLAY_ONLY]
    assert all(reason.startswith("display only") for reason in display_only)  # never written, whatever the flags


def test_a_fix_record_writes_the_strings_it_always_wrote() -> None:
    record = FixRecord("m.py", "MC301", 3, FixStatus.HELD_BACK, "unsafe: exact at 33×33 only; apply with "
                       "--unsafe-fixes", "pool", Applicability.UNSAFE)
    assert record.to_json() == {"path": "m.py", "code": "MC301", "line": 3, "status": "held_back",
                                "reason": "unsafe: exact at 33×33 only; apply with --unsafe-fixes",
                                "summary": "pool", "safety": "unsafe", "verified": False}
    assert FixRecord("m.py", "MC102", 4, FixStatus.NOT_FIXABLE).to_json()["safety"] is None
    notes = summarize([record], dry_run=False, verifiable=True)
    assert notes[0] == "--fix: 0 fix(es) applied" and "1 unsafe fix(es) held back" in notes[1]


def test_stage_status_and_evidence_are_enums_that_read_as_their_strings() -> None:
    stage = StageResult("m", "caffe2", "mismatch")  # a caller spelling the status as text
    assert stage.status is StageStatus.MISMATCH and stage.bad and stage.status == "mismatch"
    assert f"{stage.status}" == "mismatch" and stage.to_json()["status"] == "mismatch"
    assert StageResult.from_json(stage.to_json()) == stage
    assert not StageStatus.SKIPPED.bad and not StageStatus.PASSED.bad
    finding = Finding("MC201", "m", Severity.ERROR, Location("m.py", 1), evidence="both")
    assert finding.evidence is Evidence.BOTH and finding.to_json()["evidence"] == "both"
    assert Finding.from_json(finding.to_json()).evidence is Evidence.BOTH
