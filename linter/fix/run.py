"""``--fix`` and ``--diff``, parent side: plan fixes per file, choose, write, verify, roll back.

Never imports torch: the fixers are libcst codemods and verification runs in child jobs
(:mod:`modelcheck.fix.job`). The promises to the user (README, "What it does"):

- a file with a syntax error is never touched, and output that does not parse is never written;
- writes are atomic (a temporary file in the same folder, then a rename) and keep the mode;
- ``--fix`` on a file that cannot be written is a one-line error, and then nothing is written;
- a fix that verification rejects is undone byte for byte, and the report says why;
- a second ``--fix`` changes nothing (fixed code raises no finding a fixer would act on).

Which edits apply: by their :class:`~modelcheck.fixers.base.Applicability`, safe ones with
``--fix``, unsafe ones only with ``--unsafe-fixes``, display-only ones never. By their
:class:`~modelcheck.fixers.base.Exactness`, an edit that is not exact by construction needs a
model to verify it on; without one it is held back and the report says nothing could be verified.

Verification (:class:`Verification`, child jobs in :mod:`modelcheck.fix.job`) rolls a fix back when
the model built from the fixed files does not load the original ``state_dict`` strictly or gives
other outputs. Fixes that change the exported graph are then smoke-tested on the fixed files and
judged family by family (:func:`blame`; only bad stages no finding still in the code predicts
count). A family's fixes are rolled back when the fixed model fails on their own construct: the
line of the failing ONNX node (the ``locate`` job finds it in the exported graph) is code they
rewrote or wrote, or, where no line is known, the failing operator is their family's
(``Family.failing_ops``); when a stage their findings predicted is still bad and the error names
no operator and no line; when a stage the model passed without them now fails (the model is
smoke-tested without them to see, only when it comes to that); or when a stage they were meant
to repair fails just as before. A fixed model that gets further (its export passes now) and then
fails on another construct keeps the fixes: their records, and a ``kept:`` note, say what the
fixed model now passes and what it fails on next, and where: at the finding that predicts it,
else UNPREDICTED with the stage, operator, ONNX node and line.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libcst as cst
from modelcheck.findings import Evidence, Finding, Location, Report, StageResult, StageStatus
from modelcheck.fix.records import (
    DISPLAY_ONLY_REASON,
    NEEDS_MODEL_REASON,
    NO_AUTOMATIC_FIX,
    UNSAFE_REASON,
    FixRecord,
    FixStatus,
    summarize,
)
from modelcheck.fixers import EXPORT_CODES, FIXABLE_CODES, FIXERS, VERIFY_GROUPS
from modelcheck.fixers.base import (
    Applicability,
    ApplyError,
    Decision,
    Decline,
    Edit,
    FixContext,
    Names,
    apply_edits,
)
from modelcheck.rules import FAMILY_OF_CODE, RULES_BY_CODE, SYNTAX_ERROR
from modelcheck.smoke.stages import failing_node, failing_op
from modelcheck.static.run import CODING, PathError, check_source
from modelcheck.static.source import SourceFile

if TYPE_CHECKING:
    from modelcheck.jobs.run import ChildOutcome
    from modelcheck.models.specs import ModelSpec
    from modelcheck.pipeline import Options

#: ``recheck(path, text)``: the static pass on a file's new text (its findings at the new lines)
Recheck = Callable[[str, str], list[Finding]]


class FixError(PathError):
    """A file ``--fix`` must write but cannot; nothing was written. The message is one line."""


@dataclass
class FilePlan:
    """One file: its original bytes and text, what the fixers decided, and what is chosen."""

    path: str
    raw: bytes
    text: str
    findings: list[Finding] = field(default_factory=list)
    source: SourceFile | None = None  # the parse the edits' node ids refer to
    decisions: list[Decision] = field(default_factory=list)
    chosen: list[Edit] = field(default_factory=list)
    held: dict[int, str] = field(default_factory=dict)  # id(edit) → why held back
    fixed: str = ""
    error: str = ""  # why the file is not touched at all

    @property
    def changed(self) -> bool:
        return bool(self.chosen) and self.fixed != self.text


# ----- planning ------------------------------------------------------------------------------

def plan_file(source: SourceFile, findings: Sequence[Finding], context: FixContext) -> list[Decision]:
    """Every fixer's decision for the findings of one parsed file."""
    names = Names(source)
    decisions: list[Decision] = []
    for fixer in FIXERS:
        mine = [f for f in findings if f.code in fixer.CODES]
        if mine:
            decisions.extend(fixer.plan(source, mine, context, names))
    return decisions


def choose(decisions: Sequence[Decision], *, unsafe: bool, verifiable: bool) -> tuple[list[Edit], dict[int, str]]:
    """The edits to apply now, and why each other edit is held back (by id)."""
    chosen: list[Edit] = []
    held: dict[int, str] = {}
    least = Applicability.least(unsafe_fixes=unsafe)
    for decision in decisions:
        if not isinstance(decision, Edit):
            continue
        if decision.applicability is Applicability.DISPLAY_ONLY:
            held[id(decision)] = f"{DISPLAY_ONLY_REASON}: {decision.reason}; not written, apply it by hand"
        elif decision.applicability < least:
            held[id(decision)] = f"{UNSAFE_REASON}: {decision.reason}; apply with --unsafe-fixes"
        elif decision.exactness.needs_model and not verifiable:
            held[id(decision)] = (f"{NEEDS_MODEL_REASON}: no model built from this file (pass "
                                  "--model file.py:Name, and run without --static-only)")
        else:
            chosen.append(decision)
    return chosen, held


def make_plans(
    sources: dict[str, str],
    findings: Sequence[Finding],
    context: FixContext,
    *,
    unsafe: bool,
    verifiable: bool | Callable[[str], bool],
) -> list[FilePlan]:
    """A FilePlan for every file with findings; files that cannot be fixed say why.

    ``verifiable`` (or ``verifiable(path)``): can a model built from the file verify its edits?
    """
    by_path: dict[str, list[Finding]] = {}
    for finding in findings:
        by_path.setdefault(finding.location.path, []).append(finding)
    plans: list[FilePlan] = []
    for path, file_findings in by_path.items():
        if path not in sources:
            plans.append(FilePlan(path, b"", "", findings=file_findings,
                                  error="the file is not among the paths checked; pass it to fix it"))
            continue
        text = sources[path]
        plan = FilePlan(path, b"", text, findings=file_findings)
        plans.append(plan)
        if any(f.code == SYNTAX_ERROR for f in file_findings):
            plan.error = "the file has a syntax error; not touched"
            continue
        try:
            plan.raw = Path(path).read_bytes()
        except OSError as exc:
            plan.error = f"cannot read it again ({exc.strerror or exc})"
            continue
        if _decode(plan.raw) != text:
            plan.error = "it changed on disk while modelcheck ran; not touched"
            continue
        try:
            plan.source = SourceFile.parse(path, text)
            plan.decisions = plan_file(plan.source, file_findings, context)
        except (cst.ParserSyntaxError, RecursionError) as exc:
            plan.error = f"cannot be parsed for fixing ({str(exc).splitlines()[0] if str(exc) else exc})"
            continue
        can_verify = verifiable(path) if callable(verifiable) else verifiable
        plan.chosen, plan.held = choose(plan.decisions, unsafe=unsafe, verifiable=can_verify)
        rebuild(plan)
    return plans


def rebuild(plan: FilePlan) -> None:
    """Recompute ``plan.fixed`` from ``plan.chosen``; if that would not parse, choose nothing."""
    if not plan.chosen or plan.source is None:
        plan.fixed = plan.text
        return
    try:
        plan.fixed = apply_edits(plan.source, plan.chosen)
        if plan.raw:
            _encode(plan.fixed, plan.raw)  # a coding cookie's encoding may not hold what a fix writes
    except ApplyError as exc:
        plan.error = str(exc)
        plan.chosen = []
        plan.fixed = plan.text
    except UnicodeEncodeError as exc:
        plan.error = f"the fixed source cannot be written in the file's encoding ({exc.reason}); nothing written"
        plan.chosen = []
        plan.fixed = plan.text


def _encoding(raw: bytes) -> str:
    """The encoding the static pass read the file with (``read_source``): its PEP 263 coding
    cookie, else UTF-8 with or without a BOM."""
    cookie = CODING.match(raw)
    return cookie.group(1).decode("ascii") if cookie else "utf-8-sig"


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode(_encoding(raw))
    except (LookupError, UnicodeDecodeError):
        return None


def _encode(text: str, like: bytes) -> bytes:
    """``text`` in the encoding of the file it replaces (``like``), its BOM kept."""
    encoding = _encoding(like)
    data = text.encode("utf-8" if encoding == "utf-8-sig" else encoding)
    bom = b"\xef\xbb\xbf"
    return bom + data if like.startswith(bom) and not data.startswith(bom) else data


# ----- diff and writing ----------------------------------------------------------------------

def unified_diff(plans: Sequence[FilePlan]) -> str:
    """What --fix would write, as one unified diff (``a/`` and ``b/`` prefixes, as git)."""
    chunks: list[str] = []
    for plan in plans:
        if not plan.changed:
            continue
        chunks.extend(difflib.unified_diff(
            plan.text.splitlines(keepends=True), plan.fixed.splitlines(keepends=True),
            fromfile=_diff_name("a", plan.path), tofile=_diff_name("b", plan.path),
        ))
        if chunks and not chunks[-1].endswith("\n"):
            chunks[-1] += "\n\\ No newline at end of file\n"
    return "".join(chunks)


def _diff_name(side: str, path: str) -> str:
    """``a/src/model.py`` for a relative path (as git writes it); an absolute path stays as is."""
    return path if os.path.isabs(path) else f"{side}/{Path(path).as_posix()}"


def check_writable(path: str) -> str:
    """'' when ``path`` can be replaced atomically, else why not (one line)."""
    real = Path(os.path.realpath(path))
    try:
        mode = real.stat().st_mode
    except OSError as exc:
        return f"{path}: cannot write the fix: {exc.strerror or exc}"
    # the mode bits too: root may write anything, but a read-only file says "do not change me"
    if not os.access(real, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"{path}: cannot write the fix: the file is read-only"
    if not os.access(real.parent, os.W_OK | os.X_OK):
        return f"{path}: cannot write the fix: its folder {real.parent} is read-only"
    return ""


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temporary file and a rename; keep mode and owner.

    A symbolic link is followed: the file it points to is replaced, the link stays.
    """
    real = Path(os.path.realpath(path))
    info = real.stat()
    fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".modelcheck-tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.S_IMODE(info.st_mode))
        if os.geteuid() == 0:
            os.chown(tmp, info.st_uid, info.st_gid)
        os.replace(tmp, real)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----- records for the report ------------------------------------------------------------------

def records(plans: Sequence[FilePlan], findings: Sequence[Finding], *, dry_run: bool,
            verdict: Verdict | None = None) -> list[FixRecord]:
    """One record per decision, plus one per finding no fixer decided on."""
    verdict = verdict or Verdict()
    out: list[FixRecord] = []
    covered: set[tuple[str, str, int]] = set()
    for plan in plans:
        for decision in plan.decisions:
            covered.add((plan.path, decision.code, decision.line))
            if isinstance(decision, Decline):
                out.append(FixRecord(plan.path, decision.code, decision.line, FixStatus.NOT_FIXABLE, decision.reason))
                continue
            covered.update((plan.path, code, decision.line) for code in decision.also)
            out.extend(_edit_records(plan, decision, dry_run=dry_run, verdict=verdict))
    errors = {plan.path: plan.error for plan in plans if plan.error}
    for finding in findings:
        loc = finding.location
        if (loc.path, finding.code, loc.line) in covered:
            continue
        reason = errors.get(loc.path) or (
            "modelcheck found the construct but could not rewrite it exactly" if finding.fixable
            else f"{NO_AUTOMATIC_FIX} for {finding.code} (see modelcheck --explain {finding.code})")
        out.append(FixRecord(loc.path, finding.code, loc.line, FixStatus.NOT_FIXABLE, reason))
    out.sort(key=lambda r: (r.path, r.line, r.code))
    return out


def _edit_records(plan: FilePlan, edit: Edit, *, dry_run: bool, verdict: Verdict) -> list[FixRecord]:
    """The record of one planned edit, and one per other code on its line it resolves too."""
    key = id(edit)
    chosen = any(key == id(other) for other in plan.chosen)
    if plan.error and not chosen:
        status, reason = FixStatus.NOT_FIXABLE, plan.error
    elif key in verdict.rejected:
        status, reason = FixStatus.ROLLED_BACK, verdict.rejected[key]
    elif chosen:
        status, reason = (FixStatus.WOULD_APPLY if dry_run else FixStatus.APPLIED), edit.reason
    else:
        status, reason = FixStatus.HELD_BACK, plan.held.get(key, "")
    first = FixRecord(plan.path, edit.code, edit.line, status, reason, edit.summary, edit.applicability,
                      key in verdict.verified, verdict.notes.get(key, "") if status is FixStatus.APPLIED else "")
    along = f"with {edit.code} on this line" + (f"; {reason}" if reason else "")
    return [first, *(replace(first, code=code, reason=along) for code in edit.also)]


# ----- the step ---------------------------------------------------------------------------------

#: makes the files on disk hold exactly the chosen edits whose ids are given (the rest undone)
Materialize = Callable[[set[int]], None]


@dataclass
class Verdict:
    """What verification made of the written edits, by ``id(edit)``."""

    verified: set[int] = field(default_factory=set)  # kept, and a model built from the fixed file matched
    rejected: dict[int, str] = field(default_factory=dict)  # rolled back → why
    notes: dict[int, str] = field(default_factory=dict)  # kept → what the fixed model's smoke test ran into next


#: (changed plans, materialize) → the verdict; it may undo edits through ``materialize``
Verifier = Callable[[list[FilePlan], Materialize], Verdict]


def fix_step(
    report: Report,
    sources: dict[str, str],
    context: FixContext,
    *,
    write: bool,
    unsafe: bool,
    covered: Callable[[str], bool] | None = None,
    verifier: Verifier | None = None,
    recheck: Recheck | None = None,
) -> None:
    """Plan, choose and (with ``write``) apply fixes; fill ``report.fixes`` and notes.

    ``covered(path)`` says whether a model built from the file can verify its edits (None: no
    model at all). ``verifier`` runs after the chosen edits are written and may undo some
    through the ``materialize`` callback it gets. ``recheck(path, text)`` re-runs the static pass
    on a fixed file, so the report shows what is left, at the new line numbers.
    """
    plans = make_plans(sources, report.findings, context, unsafe=unsafe,
                       verifiable=covered or (lambda _path: False))
    original_findings = list(report.findings)
    verdict = Verdict()
    if not write:
        report.diff = unified_diff(plans)
    else:
        changed = [plan for plan in plans if plan.changed]
        problems = [why for plan in changed if (why := check_writable(plan.path))]
        if problems:
            raise FixError(problems[0] + ("" if len(problems) == 1 else f" (and {len(problems) - 1} more)")
                           + "; nothing was written")
        materialize = _materializer(changed)
        try:
            materialize({id(edit) for plan in changed for edit in plan.chosen})
            if verifier is not None and changed:
                verdict = verifier(changed, materialize)
        except BaseException as exc:  # a full disk, Ctrl-C while verifying: leave the files as they were
            with contextlib.suppress(OSError):
                materialize(set())
            if isinstance(exc, FixError):
                raise FixError(f"{exc}; every file was restored") from None
            raise
        for plan in changed:
            plan.chosen = [edit for edit in plan.chosen if id(edit) not in verdict.rejected]
            rebuild(plan)
        if recheck is not None:
            _recheck(report, plans, recheck)
    report.fixes = records(plans, original_findings, dry_run=not write, verdict=verdict)
    report.notes.extend(summarize(report.fixes, dry_run=not write, verifiable=covered is not None))


def _materializer(changed: list[FilePlan]) -> Materialize:
    """A function that rewrites the changed files to hold a subset of their chosen edits."""
    chosen = {plan.path: list(plan.chosen) for plan in changed}
    on_disk = {plan.path: plan.raw for plan in changed}

    def materialize(keep: set[int]) -> None:
        for plan in changed:
            edits = [edit for edit in chosen[plan.path] if id(edit) in keep]
            data = plan.raw
            if edits and plan.source is not None:
                try:
                    data = _encode(apply_edits(plan.source, edits), plan.raw)
                except ApplyError:
                    data = plan.raw
            if data != on_disk[plan.path]:
                try:
                    write_atomic(plan.path, data)
                except OSError as exc:
                    raise FixError(f"{plan.path}: cannot write the fix: {exc.strerror or exc}") from None
                on_disk[plan.path] = data

    return materialize


def _recheck(report: Report, plans: Sequence[FilePlan], recheck: Recheck) -> None:
    """Findings of fixed files come from a fresh static check of their new text.

    Dynamic sightings in those files stay if no kept edit fixed them, moved to their new line.
    """
    fixed = {plan.path: plan for plan in plans if plan.changed}
    if not fixed:
        return
    kept = [f for f in report.findings if f.location.path not in fixed]
    for plan in fixed.values():
        done = {(edit.code, edit.line) for edit in plan.chosen} | {
            (code, edit.line) for edit in plan.chosen for code in edit.also}
        kept.extend(findings_now(report.findings, plan, plan.fixed, recheck, done, report.refuted))
    kept.sort(key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    report.findings = kept


def findings_now(findings: Sequence[Finding], plan: FilePlan, text: str, recheck: Recheck,
                 done: Collection[tuple[str, int]] = (), refuted: Sequence[Finding] = ()) -> list[Finding]:
    """The findings of ``plan``'s file with ``text`` in it: a fresh static check (less what tracing
    refuted before the fix, on the same line, rewritten or not), plus the dynamic sightings of
    ``findings`` there that no edit in ``done`` (code, line) fixed, at their new line."""
    moved = _line_map(plan.text, text)
    mine = [f for f in refuted if f.location.path == plan.path]
    rewritten = _line_map(plan.text, text, rewritten=True) if mine else {}
    dropped = {(f.code, rewritten.get(f.location.line)) for f in mine}
    fresh = [f for f in recheck(plan.path, text) if (f.code, f.location.line) not in dropped]
    out = list(fresh)
    seen = {(f.code, f.location.line) for f in fresh}
    for finding in findings:
        loc = finding.location
        if loc.path != plan.path or finding.evidence is Evidence.STATIC or (finding.code, loc.line) in done:
            continue
        line = moved.get(loc.line)
        if line is None or (finding.code, line) in seen:
            continue
        shift = line - loc.line
        out.append(finding.with_(
            evidence=Evidence.DYNAMIC,
            location=replace(loc, line=line, end_line=None if loc.end_line is None else loc.end_line + shift)))
    return out


def _line_map(before: str, after: str, rewritten: bool = False) -> dict[int, int]:
    """Old line → new line, for the lines a fix did not touch (1-based); ``rewritten``: also each
    line of a run of lines rewritten one for one (``F.upsample(...)`` → ``F.interpolate(...)``)."""
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (rewritten and tag == "replace" and i2 - i1 == j2 - j1):
            mapping.update((i1 + k + 1, j1 + k + 1) for k in range(i2 - i1))
    return mapping


def run_fix_step(options: Options, report: Report, sources: dict[str, str],
                 specs: Sequence[ModelSpec] = ()) -> list[str]:
    """The pipeline's fix step (``options``: a ``pipeline.Options`` with --fix or --diff).

    ``specs`` are the models of the run (the dynamic pass resolved them). With ``--fix`` and a
    model, edits are verified on it; returns the specs whose smoke test ran on the final files
    here, so the pipeline's smoke step need not run them again.
    """
    target = options.target
    context = FixContext(target.name, target.opset)

    def recheck(path: str, text: str) -> list[Finding]:
        return check_source(path, text, target, options.config)

    session = None
    to_fix = [f for f in report.findings if f.code in FIXABLE_CODES and f.location.path in sources]
    if specs and to_fix and not options.static_only:  # nothing a fixer acts on: no model to build
        session = Verification(options, report, list(specs), recheck)
        session.reference()
        context.call_shapes = session.call_shapes
    try:
        fix_step(report, sources, context, write=options.fix, unsafe=options.unsafe_fixes,
                 covered=session.covers if session and session.models else None,
                 verifier=session.verify if session and session.models else None, recheck=recheck)
    finally:
        if session is not None:
            report.notes.extend(session.notes)
            session.close()
    return session.smoked if session is not None else []


# ----- verification, parent side ------------------------------------------------------------------

#: id(edit) → (its file's plan, the edit): the chosen edits of the changed files
Edits = dict[int, tuple[FilePlan, Edit]]


@dataclass(frozen=True)
class VerifyingModel:
    """A model that verifies the edits in the files it is built from, and its reference build."""

    spec: ModelSpec
    folder: Path  # the reference's state_dict, inputs and outputs (the verify job's work folder)
    reference: dict[str, Any]  # what the reference build recorded: files, tree, call shapes, pickling

    @property
    def files(self) -> set[str]:
        return set(self.reference["files"])

    def mine(self, edits: Edits, keep: set[int]) -> list[Edit]:
        """The kept edits in the files this model is built from."""
        return [edit for key, (plan, edit) in edits.items()
                if key in keep and os.path.realpath(plan.path) in self.files]


def size_bound(edits: Edits, keys: Collection[int]) -> str:
    """Why the unsafe edits among ``keys`` tie the fixed model's export to the traced input size, or ''."""
    unsafe = sorted({(Path(edits[key][0].path).name, edits[key][1].line, edits[key][1].code) for key in keys
                     if edits[key][1].applicability is Applicability.UNSAFE})
    if not unsafe:
        return ""
    where = ", ".join(f"{code} at {name}:{line}" for name, line, code in unsafe[:3])
    more = f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else ""
    return (f"the fixed export holds for the traced input size only: --unsafe-fixes kept {len(unsafe)} "
            f"fix(es) that bake that size in ({where}{more})")


# ----- judging a fixed model's smoke test ------------------------------------------------------------

#: how a bad stage reads in a note: "caffe2 fails on Pow"
_DOES = {"failed": "fails", "crashed": "crashes", "timeout": "times out", "mismatch": "does not match PyTorch"}


@dataclass(frozen=True)
class SeenStage:
    """A smoke-test stage as verification reads it: the result, the operator and ONNX node its
    error names, and where the failure is in the code as it was before the fix."""

    stage: StageResult
    label: str  # "caffe2"; "onnx export" when several targets' stages must read apart
    op: str | None = None
    node: str | None = None
    #: (real path, line before the fix or None for code a fix wrote, that line's text now); None: not placed
    at: tuple[str, int | None, str] | None = None

    @classmethod
    def of(cls, stage: StageResult, *, qualified: bool = False) -> SeenStage:
        label = f"{stage.target} {stage.name}" if qualified and stage.target not in ("", stage.name) else stage.name
        if not stage.bad:
            return cls(stage, label)
        return cls(stage, label, stage.op or failing_op(stage.detail), stage.node or failing_node(stage.detail))

    @property
    def key(self) -> tuple[str, str]:
        return self.stage.target, self.stage.name

    @property
    def outcome(self) -> tuple[str, str]:
        """(stage, status), as a rule's ``predicts`` names it."""
        return self.stage.name, str(self.stage.status)

    def same_failure(self, other: SeenStage) -> bool:
        return self.stage.bad and self.stage.status == other.stage.status and self.op == other.op

    def describe(self) -> str:
        """``caffe2 fails on Pow at net.py:27 (UNPREDICTED by any finding; ONNX node /norm/Pow)``."""
        stage, loc, status = self.stage, self.stage.location, str(self.stage.status)
        what = f"{self.label} {_DOES.get(status, status)}" + (f" on {self.op}" if self.op else "")
        where = f" at {loc.path}:{loc.line}" if loc else ""
        why = f"predicted by {', '.join(stage.predicted_by)}" if stage.predicted_by else "UNPREDICTED by any finding"
        return f"{what}{where} ({why}{f'; ONNX node {self.node}' if self.node else ''})"

    def failure(self) -> str:
        """The outcome for a rollback's reason, at its line before the fix: the fixed code is about to go."""
        stage, loc, detail = self.stage, self.stage.location, self.stage.detail
        if loc and self.at and detail.endswith(suffix := f" (at {loc.path}:{loc.line})"):
            line = self.at[1]
            detail = detail[:-len(suffix)] + (f" (at {loc.path}:{line})" if line is not None else
                                              " (in code the fix wrote)")
        return f"{self.label} {stage.status}: {detail}"[:300]


@dataclass(frozen=True, eq=False)
class FixGroup:
    """One rule family's kept edits that change a model's export: kept or rolled back together."""

    family: str
    failing_ops: re.Pattern[str] | None  # the operators that are this family's construct
    keys: frozenset[int]
    meant: frozenset[tuple[str, str]]  # (stage, status) its findings predicted: what it was meant to repair
    places: frozenset[tuple[str, int]]  # (real path, line) of its edits, before the fix
    written: frozenset[tuple[str, str]]  # (real path, stripped line) of the code its edits alone write

    def owns(self, seen: SeenStage) -> bool:
        """The failure is this group's construct: placed in code it rewrote or wrote, or, not placed,
        on an operator of its family."""
        if seen.at is None:
            return bool(seen.op and self.failing_ops and self.failing_ops.search(seen.op))
        path, line, text = seen.at
        return (path, line) in self.places if line is not None else (path, text.strip()) in self.written


def fix_groups(edits: Edits, keys: set[int]) -> list[FixGroup]:
    """The edits ``keys`` by rule family, each with the smoke outcomes its findings predicted."""
    by_family: dict[str, list[int]] = {}
    for key in sorted(keys, key=lambda k: (edits[k][0].path, edits[k][1].line)):
        family = FAMILY_OF_CODE.get(edits[key][1].code)
        by_family.setdefault(family.name if family else edits[key][1].code, []).append(key)
    groups = []
    for name, members in by_family.items():
        family = FAMILY_OF_CODE.get(edits[members[0]][1].code)
        codes = {code for key in members for code in (edits[key][1].code, *edits[key][1].also)}
        meant = {(stage, status) for code in codes if code in RULES_BY_CODE
                 for stage, status, _ in RULES_BY_CODE[code].predicts}
        places = {(os.path.realpath(edits[key][0].path), edits[key][1].line) for key in members}
        groups.append(FixGroup(name, family.failing_ops if family else None, frozenset(members),
                               frozenset(meant), frozenset(places), _written({k: edits[k] for k in members})))
    return groups


def _written(edits: Edits) -> frozenset[tuple[str, str]]:
    """(real path, stripped line) of every line these edits alone add to their files."""
    by_plan: dict[str, tuple[FilePlan, list[Edit]]] = {}
    for plan, edit in edits.values():
        by_plan.setdefault(plan.path, (plan, []))[1].append(edit)
    written: set[tuple[str, str]] = set()
    for plan, mine in by_plan.values():
        if plan.source is None:
            continue
        with contextlib.suppress(ApplyError):
            old = set(plan.text.splitlines())
            real = os.path.realpath(plan.path)
            written |= {(real, line.strip()) for line in apply_edits(plan.source, mine).splitlines()
                        if line not in old and line.strip()}
    return frozenset(written)


def blame(after: Sequence[SeenStage], groups: Sequence[FixGroup],
          before: Callable[[], dict[tuple[str, str], SeenStage]]) -> dict[FixGroup, str]:
    """The groups whose own construct fails the fixed model's smoke test, and why.

    Only bad stages no finding still in the code predicts count. A group is to blame when the
    failure is its own construct (:meth:`FixGroup.owns`); when a stage it was meant to repair is
    bad and the error names no operator and no line; when the stage passed without the fixes
    (``before()``, the smoke test of the model without them, run only if it comes to that: every
    group is to blame then); or when a stage it was meant to repair fails as it did without the
    fixes. A failure of another construct in a stage the original never reached is progress.
    """
    blamed: dict[FixGroup, str] = {}
    for seen in after:
        if seen.stage.predicted_by:
            continue
        meant = [group for group in groups if seen.outcome in group.meant]
        own = [group for group in groups if group.owns(seen)]
        if own:
            culprits = dict.fromkeys(own, "its own construct fails")
        elif meant and seen.op is None and seen.at is None:
            culprits = dict.fromkeys(meant, "a stage it was meant to repair is still bad")
        else:
            culprits = _against_original(seen, groups, meant, before())
        for group, why in culprits.items():
            blamed.setdefault(group, f"{why}: {seen.failure()}")
    return blamed


def _against_original(seen: SeenStage, groups: Sequence[FixGroup], meant: list[FixGroup],
                      before: dict[tuple[str, str], SeenStage]) -> dict[FixGroup, str]:
    """Blame by the same stage of the model without the fixes: it passed there, or failed the same way."""
    original = before.get(seen.key)
    if original is None:
        return {}
    if original.stage.status == StageStatus.PASSED:
        return dict.fromkeys(groups, f"the model passed {seen.label} without the fixes")
    if seen.same_failure(original):
        return dict.fromkeys(meant, f"it did not repair {seen.label}, which fails as before")
    return {}


def progress_note(group: FixGroup, stages: Sequence[SeenStage]) -> str:
    """What a kept group's fixed model now passes that its findings said it would not, and what it
    runs into next: "the fixed model now exports; then caffe2 fails on Pow at net.py:27 (...)"."""
    repaired = list(dict.fromkeys(
        "exports" if seen.stage.name == "export" else f"passes {seen.label}" for seen in stages
        if seen.stage.status == StageStatus.PASSED and any(seen.stage.name == name for name, _ in group.meant)))
    then = "; ".join(seen.describe() for seen in stages if seen.stage.bad)
    head = f"the fixed model now {' and '.join(repaired)}; then " if repaired else "with the fix, "
    return f"{head}{then}: not the code this fix rewrote, so the fix is kept"


class Verification:
    """Builds each model before the fix (``reference``) and after (``verify``), in child jobs.

    A model verifies the edits in the files it is built from. If the fixed files fail, the
    edits are tried family by family (lambdas, pools, upsampling) so one bad family does not
    take the others down; the rejected ones are undone and reported with the reason. Edits that
    change the exported graph are then smoke-tested on the fixed files and judged by
    :func:`blame`, family by family (the module docstring says how).
    """

    def __init__(self, options: Options, report: Report, specs: list[ModelSpec], recheck: Recheck) -> None:
        self.options, self.report, self.specs, self.recheck = options, report, specs, recheck
        self.workdir = Path(tempfile.mkdtemp(prefix="modelcheck-verify-"))
        self.models: list[VerifyingModel] = []
        self.call_shapes: dict[tuple[str, int], list[tuple[int, ...]]] = {}
        self.notes: list[str] = []
        self.smoked: list[str] = []
        self.passed: dict[str, dict[str, Any]] = {}  # spec → its last passing check (the final files)
        self.smoke_notes: dict[str, list[str]] = {}  # spec → the notes its last smoke test added to the report

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def _job(self, payload: dict[str, Any]) -> ChildOutcome:
        from modelcheck.jobs.run import run_job

        if self.options.progress is not None:
            what = {"reference": "before the fix", "check": "after the fix, comparing",
                    "locate": "after the fix, to find the line of a failing node"}[payload["phase"]]
            self.options.progress(f"fix verification: building {payload['spec']['text']} {what}")
        return run_job("verify_fix", payload, self.options.config.timeout)

    def reference(self) -> None:
        """Build every model from the unfixed files and keep what the checks compare against."""
        for index, spec in enumerate(self.specs):
            folder = self.workdir / str(index)
            folder.mkdir()
            outcome = self._job({"phase": "reference", "spec": spec.to_json(), "workdir": str(folder)})
            if not outcome.ok:
                self.notes.append(f"fix verification: cannot build {spec.text} ({outcome.describe()}); "
                                  "it cannot verify fixes")
                continue
            self.models.append(VerifyingModel(spec, folder, outcome.value))
            for path, line, shapes in outcome.value["call_shapes"]:
                self.call_shapes.setdefault((path, line), []).extend(tuple(shape) for shape in shapes)

    def covers(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real in model.files for model in self.models)

    def verify(self, changed: list[FilePlan], materialize: Materialize) -> Verdict:
        """Check the written edits; undo the ones that fail; say which are verified and why each other is not."""
        edits: Edits = {id(edit): (plan, edit) for plan in changed for edit in plan.chosen}
        tested = {key for key, (plan, _) in edits.items() if self.covers(plan.path)}
        verdict = Verdict()
        kept = set(edits)
        if self._check(edits, kept):
            kept, verdict.rejected = self._retry_by_family(edits, tested, materialize)
        kept = self._smoke(edits, kept, verdict, materialize)
        self._update_pickle_results()
        verdict.verified = kept & tested
        return verdict

    def _retry_by_family(self, edits: Edits, tested: set[int],
                         materialize: Materialize) -> tuple[set[int], dict[int, str]]:
        """The whole set failed: add the fixers group by group (``VERIFY_GROUPS``), keeping those that pass."""
        kept = set(edits) - tested  # edits exact by construction in files no model loads
        rejected: dict[int, str] = {}
        for codes in VERIFY_GROUPS:
            group = {key for key in tested if edits[key][1].code in codes}
            if not group:
                continue
            materialize(kept | group)
            problem = self._check(edits, kept | group)
            if problem:
                rejected.update({key: f"verification failed: {problem}" for key in group})
            else:
                kept |= group
        materialize(kept)
        return kept, rejected

    def _update_pickle_results(self) -> None:
        """The dynamic pass probed pickling before the fix; say what holds for the fixed files."""
        for verifying in self.models:
            spec, reference = verifying.spec, verifying.reference
            value = self.passed.get(spec.text)
            if value is None:
                continue
            model = next((m for m in self.report.models if m.spec == spec.text), None)
            if model is not None and value.get("pickles") and not reference.get("pickles"):
                model.pickle = {"ok": True, "failures": [], "torch_save": {"ok": True}, "after_fix": True}
                self.notes.append(f"fix verification: {spec.text}: torch.save(model) failed before the fix "
                                  f"({reference.get('pickle_error')}) and works now")

    def _check(self, edits: Edits, keep: set[int]) -> str:
        """'' when every model built from the changed files matches its reference, else why not."""
        problems = [problem for model in self.models
                    if (mine := model.mine(edits, keep)) and (problem := self._check_model(model, mine))]
        return " | ".join(problems)

    def _check_model(self, model: VerifyingModel, mine: list[Edit]) -> str:
        """Build the fixed ``model`` and compare it with its reference; '' when it matches, else why not."""
        spec, reference = model.spec, model.reference
        exactness = min(edit.exactness.check for edit in mine)  # bitwise only if every edit is
        # the reference was ported in memory; porting edits are proven only if the written files
        # build as they are, so the check of those imports them without porting
        porting = any(code.startswith("MC4") for edit in mine for code in (edit.code, *edit.also))
        outcome = self._job({"phase": "check", "spec": spec.to_json(), "workdir": str(model.folder),
                             "exactness": exactness.value, "tolerance": 1e-6, "port_in_memory": not porting})
        if not outcome.ok:
            return f"{spec.text}: the fixed model could not be checked ({outcome.describe()})"
        value = outcome.value
        found = list(value.get("problems", []))
        if all(edit.code.startswith("MC1") for edit in mine) and value.get("tree") != reference["tree"]:
            found.append("the module tree changed")
        if found:
            more = f" (and {len(found) - 2} more)" if len(found) > 2 else ""
            return f"{spec.text}: " + "; ".join(found[:2]) + more
        self.passed[spec.text] = value
        how = "bit-identical outputs" if value.get("bit_identical") else \
            f"outputs within 1e-6 (max abs diff {value.get('max_abs_diff', 0):.2g})"
        init = " (the same keys and values when built with the same seed)" if value.get("same_init") else ""
        self.notes.append(f"fix verification: {spec.text}: the original state_dict loads with "
                          f"strict=True{init}; {how}")
        return ""

    def _smoke(self, edits: Edits, kept: set[int], verdict: Verdict, materialize: Materialize) -> set[int]:
        """Smoke-test every model whose export the kept edits change; returns the edits still kept."""
        from modelcheck.jobs.run import JOBS

        exporting = {key for key in kept if edits[key][1].code in EXPORT_CODES}
        if not self.options.smoke or "smoke" not in JOBS:
            if exporting:
                self.notes.append("fix verification: the smoke test did not run (--no-smoke): the fixed "
                                  "export was not tried")
            return kept
        for model in self.models:
            mine = {key for key in exporting & kept if os.path.realpath(edits[key][0].path) in model.files}
            if mine:
                kept = self._smoke_model(model, edits, kept, mine, verdict, materialize)
                self.smoked.append(model.spec.text)
        return kept

    def _smoke_model(self, model: VerifyingModel, edits: Edits, kept: set[int], mine: set[int],
                     verdict: Verdict, materialize: Materialize) -> set[int]:
        """One model on the fixed files: roll back, family by family, the fixes :func:`blame` blames
        (smoke-testing again after each rollback), and say what the kept ones run into next."""
        groups = fix_groups(edits, mine)
        original: list[dict[tuple[str, str], SeenStage]] = []

        def before() -> dict[tuple[str, str], SeenStage]:  # the model without its export fixes, once
            if not original:
                materialize(kept - mine)
                original.append(self._smoke_without_fixes(model.spec))
                materialize(kept)
            return original[0]

        while True:
            stages = self._placed(model, self._smoke_stages(model.spec, edits, size_bound(edits, kept & mine)), edits)
            blamed = blame([seen for seen in stages if seen.stage.bad], groups, before) if groups else {}
            if not blamed:
                break
            for group, why in blamed.items():
                verdict.rejected.update(dict.fromkeys(group.keys, f"smoke test of the fixed model: {why}"))
            groups = [group for group in groups if group not in blamed]
            kept = kept - {key for group in blamed for key in group.keys}
            materialize(kept)  # and smoke-test again: the report shows the files as they are now
        if groups and any(seen.stage.bad for seen in stages):
            for group in groups:
                verdict.notes.update(dict.fromkeys(group.keys, progress_note(group, stages)))
        return kept

    def _model_stages(self, spec: ModelSpec) -> list[StageResult]:
        model = next((m for m in self.report.models if m.spec == spec.text), None)
        return model.stages if model is not None else []

    def _smoke_stages(self, spec: ModelSpec, edits: Edits, bound: str = "") -> list[SeenStage]:
        """Run the smoke test on the files as they are, into the run's report (replacing the notes an
        earlier run of this model left); its stages, each predicted only by findings still in the code.
        ``bound``: why the kept fixes tie the export to the traced size (measured at a second size)."""
        from modelcheck.smoke.run import smoke_step

        for note in self.smoke_notes.pop(spec.text, []):
            with contextlib.suppress(ValueError):
                self.report.notes.remove(note)
        saved, start = self.report.findings, len(self.report.notes)
        self.report.findings = self._remaining(edits)  # predicted_by: only findings still in the code explain
        try:
            smoke_step(self.options, self.report, [spec], {spec.text: bound} if bound else None)
        finally:
            self.report.findings = saved
        self.smoke_notes[spec.text] = self.report.notes[start:]
        return self._seen(self._model_stages(spec))

    def _smoke_without_fixes(self, spec: ModelSpec) -> dict[tuple[str, str], SeenStage]:
        """The smoke test of the files as they are, into a report and artifacts folder of its own: the
        model without its export fixes, which the fixed model's stages are compared with."""
        from modelcheck.smoke.run import smoke_step

        report = replace(self.report, findings=list(self.report.findings), notes=[], models=[], fixes=[])
        smoke_step(replace(self.options, artifacts=self.workdir / "without-fixes"), report, [spec])
        return {seen.key: seen for seen in self._seen([stage for model in report.models for stage in model.stages])}

    def _remaining(self, edits: Edits) -> list[Finding]:
        """The run's findings as they stand in the files now (:func:`findings_now` for the changed ones)."""
        plans = {plan.path: plan for plan, _ in edits.values()}
        remaining = [f for f in self.report.findings if f.location.path not in plans]
        for plan in plans.values():
            text, _ = _read_text(plan.path)
            remaining.extend(findings_now(self.report.findings, plan, text, self.recheck, refuted=self.report.refuted))
        return remaining

    def _seen(self, stages: Sequence[StageResult]) -> list[SeenStage]:
        qualified = len(self.options.target.members) > 1  # several targets: "onnx export", "caffe2 export"
        return [SeenStage.of(stage, qualified=qualified) for stage in stages]

    def _placed(self, model: VerifyingModel, stages: list[SeenStage], edits: Edits) -> list[SeenStage]:
        """``stages`` with each unpredicted failure after the export at the line its ONNX node comes
        from (the ``locate`` job; the report's stages too: a failed export leaves no graph to look
        in), and every placed failure's line before the fix."""
        targets = {target.name: target for target in self.options.target.members}
        primary = self.options.target.members[0]
        wanted = [seen for seen in stages if seen.stage.bad and not seen.stage.predicted_by
                  and seen.stage.name != "export" and (seen.op or seen.node)
                  and targets.get(seen.stage.target, primary).onnx]
        sites: list[dict[str, Any] | None] = []
        if wanted:
            asks = [{"target": (t := targets.get(seen.stage.target, primary)).name, "opset": t.opset,
                     "exporter": t.exporter, "op": seen.op, "node": seen.node} for seen in wanted]
            outcome = self._job({"phase": "locate", "spec": model.spec.to_json(), "workdir": str(model.folder),
                                 "wanted": asks})
            sites = outcome.value if outcome.ok else []
        placed = {id(seen.stage): _at_line(seen, site) for seen, site in zip(wanted, sites, strict=False) if site}
        results = self._model_stages(model.spec)
        results[:] = [placed[id(stage)].stage if id(stage) in placed else stage for stage in results]
        back = _lines_before_fix(edits)
        return [_with_origin(placed.get(id(seen.stage), seen), back) for seen in stages]


def _at_line(seen: SeenStage, site: dict[str, Any]) -> SeenStage:
    """``seen`` placed at the line the ``locate`` job found (instead of a guess by the operator's family)."""
    stage, loc = seen.stage, seen.stage.location
    detail = stage.detail.removesuffix(f" (at {loc.path}:{loc.line})") if loc else stage.detail
    stage = replace(stage, location=Location(site["path"], site["line"]),
                    detail=f"{detail} (at {site['path']}:{site['line']})")
    return replace(seen, stage=stage, node=seen.node or site["node"])


def _lines_before_fix(edits: Edits) -> dict[str, tuple[dict[int, int], list[str]]]:
    """Real path of each changed file → ({line now: line before the fix} for the lines no fix
    touched, the file's lines now)."""
    back: dict[str, tuple[dict[int, int], list[str]]] = {}
    for plan, _ in edits.values():
        real = os.path.realpath(plan.path)
        if real not in back:
            now, _ = _read_text(plan.path)
            back[real] = ({new: old for old, new in _line_map(plan.text, now).items()}, now.splitlines())
    return back


def _with_origin(seen: SeenStage, back: dict[str, tuple[dict[int, int], list[str]]]) -> SeenStage:
    """``seen`` with where its failure is in the code before the fix (``SeenStage.at``)."""
    loc = seen.stage.location
    if not seen.stage.bad or loc is None:
        return seen
    real = os.path.realpath(loc.path)
    if real not in back:
        return replace(seen, at=(real, loc.line, ""))  # a file no fix changed
    lines, now = back[real]
    return replace(seen, at=(real, lines.get(loc.line), now[loc.line - 1] if 0 < loc.line <= len(now) else ""))


def _read_text(path: str) -> tuple[str, bytes]:
    raw = Path(path).read_bytes()
    return _decode(raw) or "", raw
