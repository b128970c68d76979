"""What ``--fix`` and ``--diff`` did, one record per fix, and the notes a user reads about it.

Plain data, so the reporters can render it without libcst: :class:`FixRecord` is what
``Report.fixes`` holds and ``--format json`` writes (``to_json``, the same keys and strings as
ever: ``status`` and ``safety`` are the enums' values; ``note`` only on a kept fix that has one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelcheck.findings import TextEnum
from modelcheck.fixers.base import Applicability


class FixStatus(TextEnum):
    """What became of one fix (or of a finding no fixer could rewrite)."""

    APPLIED = "applied"  # written (and verified, if a model covers the file)
    WOULD_APPLY = "would_apply"  # --diff: --fix would write it
    HELD_BACK = "held_back"  # needs --unsafe-fixes, or a model to verify it on
    ROLLED_BACK = "rolled_back"  # written, then undone: verification or the smoke test rejected it
    NOT_FIXABLE = "not_fixable"  # no fixer rewrites it here, or the file cannot be touched


#: how the reason of a record starts, by why it is held back or not fixed (the notes count by them)
UNSAFE_REASON = "unsafe"  # held back for want of --unsafe-fixes
NEEDS_MODEL_REASON = "needs a model to verify it on"  # held back for want of a model
DISPLAY_ONLY_REASON = "display only"  # a suggestion, never written
NO_AUTOMATIC_FIX = "no automatic fix"  # no fixer for the code: left out of the notes


@dataclass(frozen=True)
class FixRecord:
    """One fix at one place: its status, why, what it changes, and how safe it is."""

    path: str
    code: str
    line: int
    status: FixStatus
    reason: str = ""
    summary: str = ""  # what changes ("lambda x: x -> _identity"); "" where no edit was planned
    applicability: Applicability | None = None  # None where no edit was planned
    verified: bool = False  # a model built from the fixed file gave the original's outputs
    #: kept, and the fixed model's smoke test got further and then failed on another construct: where and how
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path, "code": self.code, "line": self.line, "status": self.status.value,
            "reason": self.reason, "summary": self.summary,
            "safety": self.applicability.value if self.applicability is not None else None,
            "verified": self.verified, **({"note": self.note} if self.note else {}),
        }

    def held_for(self, reason: str) -> bool:
        """Held back for this reason (``UNSAFE_REASON``, ``NEEDS_MODEL_REASON``, ...)."""
        return self.status is FixStatus.HELD_BACK and self.reason.startswith(reason)

    @property
    def worth_a_note(self) -> bool:
        """A finding not fixed for a reason the user can act on (not "there is no fix for it")."""
        return bool(self.reason) and not self.reason.startswith(NO_AUTOMATIC_FIX)


def summarize(fixes: Sequence[FixRecord], *, dry_run: bool, verifiable: bool) -> list[str]:
    """The notes a user reads: what was fixed, what was held back and how to apply it, and why
    each fix that was not made was not."""
    def count(status: FixStatus) -> int:
        return sum(1 for r in fixes if r.status is status)

    acted = (FixStatus.APPLIED, FixStatus.WOULD_APPLY, FixStatus.HELD_BACK, FixStatus.ROLLED_BACK)
    if not any(r.status in acted for r in fixes):
        declined = [r for r in fixes if r.status is FixStatus.NOT_FIXABLE and not r.summary and r.worth_a_note]
        return ["nothing to fix" if not declined else "no fix to apply", *_item_notes(declined, "not fixed")]
    verified = sum(1 for r in fixes if r.status is FixStatus.APPLIED and r.verified)
    if dry_run:
        notes = [f"--diff: {count(FixStatus.WOULD_APPLY)} fix(es) would be applied; nothing was written"]
    else:
        notes = [f"--fix: {count(FixStatus.APPLIED)} fix(es) applied"
                 + (f", {verified} verified on a model" if verified else "")]
    unsafe_held = [r for r in fixes if r.held_for(UNSAFE_REASON)]
    if unsafe_held:
        notes.append(f"{len(unsafe_held)} unsafe fix(es) held back (exact only for the configured input shape(s), "
                     "or the exported graph is tied to the traced input size); apply them with "
                     "--fix --unsafe-fixes")
    if not verifiable:
        waiting = sum(1 for r in fixes if r.held_for(NEEDS_MODEL_REASON))
        notes.append("nothing was verified: no model to build and compare the fixed code on, so only fixes "
                     "exact by construction were applied"
                     + (f", {waiting} that need verifying were held back" if waiting else "")
                     + "; give one with --model file.py:Name (without --static-only)")
    notes.extend(_kept_notes([r for r in fixes if r.status is FixStatus.APPLIED and r.note]))
    notes.extend(_item_notes([r for r in fixes if r.status is FixStatus.ROLLED_BACK], "rolled back"))
    notes.extend(_item_notes([r for r in fixes if r.status is FixStatus.NOT_FIXABLE and r.worth_a_note],
                             "not fixed"))
    return notes


def _kept_notes(items: Sequence[FixRecord]) -> list[str]:
    """One note per thing kept fixes ran into next (the fixes of one model share it): where, then what."""
    places: dict[str, list[str]] = {}
    for record in items:
        where = places.setdefault(record.note, [])
        if f"{record.path}:{record.line}" not in where:
            where.append(f"{record.path}:{record.line}")
    return [f"kept: {', '.join(where)}: {note}" for note, where in places.items()]


def _item_notes(items: Sequence[FixRecord], what: str, limit: int = 20) -> list[str]:
    notes = [f"{what}: {r.path}:{r.line} {r.code}: {r.reason}" for r in items[:limit]]
    if len(items) > limit:
        notes.append(f"{what}: {len(items) - limit} more (see --format json)")
    return notes
