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
"""

from __future__ import annotations

import contextlib
import difflib
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libcst as cst
from modelcheck.findings import Evidence, Finding, Report
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
from modelcheck.rules import SYNTAX_ERROR
from modelcheck.static.run import _CODING, PathError, check_source
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
    cookie = _CODING.match(raw)
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
            verified: set[int], rolled_back: dict[int, str]) -> list[FixRecord]:
    """One record per decision, plus one per finding no fixer decided on."""
    out: list[FixRecord] = []
    covered: set[tuple[str, str, int]] = set()
    for plan in plans:
        for decision in plan.decisions:
            covered.add((plan.path, decision.code, decision.line))
            if isinstance(decision, Decline):
                out.append(FixRecord(plan.path, decision.code, decision.line, FixStatus.NOT_FIXABLE, decision.reason))
                continue
            covered.update((plan.path, code, decision.line) for code in decision.also)
            out.extend(_edit_records(plan, decision, dry_run=dry_run, verified=id(decision) in verified,
                                     rolled_back=rolled_back))
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


def _edit_records(plan: FilePlan, edit: Edit, *, dry_run: bool, verified: bool,
                  rolled_back: dict[int, str]) -> list[FixRecord]:
    """The record of one planned edit, and one per other code on its line it resolves too."""
    key = id(edit)
    chosen = any(key == id(other) for other in plan.chosen)
    if plan.error and not chosen:
        status, reason = FixStatus.NOT_FIXABLE, plan.error
    elif key in rolled_back:
        status, reason = FixStatus.ROLLED_BACK, rolled_back[key]
    elif chosen:
        status, reason = (FixStatus.WOULD_APPLY if dry_run else FixStatus.APPLIED), edit.reason
    else:
        status, reason = FixStatus.HELD_BACK, plan.held.get(key, "")
    first = FixRecord(plan.path, edit.code, edit.line, status, reason, edit.summary, edit.applicability, verified)
    along = f"with {edit.code} on this line" + (f"; {reason}" if reason else "")
    return [first, *(replace(first, code=code, reason=along) for code in edit.also)]


# ----- the step ---------------------------------------------------------------------------------

#: makes the files on disk hold exactly the chosen edits whose ids are given (the rest undone)
Materialize = Callable[[set[int]], None]
#: (changed plans, materialize) → (ids of the edits kept and verified, why each rejected edit failed)
Verifier = Callable[[list[FilePlan], Materialize], tuple[set[int], dict[int, str]]]


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
    verified: set[int] = set()
    rolled_back: dict[int, str] = {}
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
                verified, rolled_back = verifier(changed, materialize)
        except BaseException as exc:  # a full disk, Ctrl-C while verifying: leave the files as they were
            with contextlib.suppress(OSError):
                materialize(set())
            if isinstance(exc, FixError):
                raise FixError(f"{exc}; every file was restored") from None
            raise
        for plan in changed:
            plan.chosen = [edit for edit in plan.chosen if id(edit) not in rolled_back]
            rebuild(plan)
        if recheck is not None:
            _recheck(report, plans, recheck)
    report.fixes = records(plans, original_findings, dry_run=not write, verified=verified,
                           rolled_back=rolled_back)
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
    for path, plan in fixed.items():
        fresh = recheck(path, plan.fixed)
        kept.extend(fresh)
        done = {(edit.code, edit.line) for edit in plan.chosen} | {
            (code, edit.line) for edit in plan.chosen for code in edit.also}
        moved = _line_map(plan.text, plan.fixed)
        seen = {(f.code, f.location.line) for f in fresh}
        for finding in report.findings:
            loc = finding.location
            if loc.path != path or finding.evidence is Evidence.STATIC or (finding.code, loc.line) in done:
                continue
            line = moved.get(loc.line)
            if line is None or (finding.code, line) in seen:
                continue
            shift = line - loc.line
            kept.append(finding.with_(
                evidence=Evidence.DYNAMIC,
                location=replace(loc, line=line, end_line=None if loc.end_line is None else loc.end_line + shift)))
    kept.sort(key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    report.findings = kept


def _line_map(before: str, after: str) -> dict[int, int]:
    """Old line → new line, for the lines a fix did not touch (1-based)."""
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            mapping[block.a + offset + 1] = block.b + offset + 1
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

#: fix families in the order they are retried one by one when the whole set fails verification


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


class Verification:
    """Builds each model before the fix (``reference``) and after (``verify``), in child jobs.

    A model verifies the edits in the files it is built from. If the fixed files fail, the
    edits are tried family by family (lambdas, pools, upsampling) so one bad family does not
    take the others down; the rejected ones are undone and reported with the reason. Edits that
    change the exported graph are then smoke-tested on the fixed files; a bad stage that no
    remaining finding explains rejects them too.
    """

    def __init__(self, options: Options, report: Report, specs: list[ModelSpec], recheck: Recheck) -> None:
        self.options, self.report, self.specs, self.recheck = options, report, specs, recheck
        self.workdir = Path(tempfile.mkdtemp(prefix="modelcheck-verify-"))
        self.models: list[VerifyingModel] = []
        self.call_shapes: dict[tuple[str, int], list[tuple[int, ...]]] = {}
        self.notes: list[str] = []
        self.smoked: list[str] = []
        self.passed: dict[str, dict[str, Any]] = {}  # spec → its last passing check (the final files)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    def _job(self, payload: dict[str, Any]) -> ChildOutcome:
        from modelcheck.jobs.run import run_job

        if self.options.progress is not None:
            what = "before the fix" if payload["phase"] == "reference" else "after the fix, comparing"
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

    def verify(self, changed: list[FilePlan], materialize: Materialize) -> tuple[set[int], dict[int, str]]:
        """Check the written edits; undo the ones that fail; return (verified ids, rejected → why)."""
        edits: Edits = {id(edit): (plan, edit) for plan in changed for edit in plan.chosen}
        tested = {key for key, (plan, _) in edits.items() if self.covers(plan.path)}
        kept = set(edits)
        rejected: dict[int, str] = {}
        if self._check(edits, kept):
            kept, rejected = self._retry_by_family(edits, tested, materialize)
        self._smoke(edits, kept, rejected, materialize)
        self._update_pickle_results()
        return kept & tested, rejected

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

    def _smoke(self, edits: Edits, kept: set[int], rejected: dict[int, str], materialize: Materialize) -> None:
        """Smoke-test models whose export the kept edits change; undo those edits on a bad stage."""
        from modelcheck.jobs.run import JOBS

        if not self.options.smoke or "smoke" not in JOBS:
            if any(edit.code in EXPORT_CODES for key, (_, edit) in edits.items() if key in kept):
                self.notes.append("fix verification: the smoke test did not run (--no-smoke): the fixed "
                                  "export was not tried")
            return
        for model in self.models:
            exported = {key for key in kept if edits[key][1].code in EXPORT_CODES
                        and os.path.realpath(edits[key][0].path) in model.files}
            if not exported:
                continue
            bad = self._smoke_once(model.spec, edits)
            if bad:
                for key in exported:
                    rejected[key] = f"smoke test of the fixed model failed: {bad}"
                kept -= exported
                materialize(kept)
                self._smoke_once(model.spec, edits)  # the report shows the files as they are now
            self.smoked.append(model.spec.text)

    def _smoke_once(self, spec: ModelSpec, edits: Edits) -> str:
        """Run the smoke test on the files as they are; a bad stage no remaining finding explains."""
        from modelcheck.smoke.run import smoke_step

        plans = {plan.path: plan for plan, _ in edits.values()}
        remaining = [f for f in self.report.findings if f.location.path not in plans]
        for path in plans:
            text, _ = _read_text(path)
            remaining.extend(self.recheck(path, text))
        saved = self.report.findings
        self.report.findings = remaining  # predicted_by: only findings still in the code explain a stage
        try:
            smoke_step(self.options, self.report, [spec])
        finally:
            self.report.findings = saved
        model = next((m for m in self.report.models if m.spec == spec.text), None)
        stages = model.stages if model is not None else []
        return "; ".join(f"{stage.name} {stage.status}: {stage.detail}"[:300]
                         for stage in stages if stage.bad and not stage.predicted_by)


def _read_text(path: str) -> tuple[str, bytes]:
    raw = Path(path).read_bytes()
    return _decode(raw) or "", raw
