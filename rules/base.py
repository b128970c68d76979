"""What a rule is: a code, its documentation, a per-target verdict and a predicate over facts.

A rule family (one module in ``rules/``) extracts *facts* about a construct — an upsampling
call's mode, a pool's ``ceil_mode`` — from source (libcst) or from a live module (the dynamic
pass), and each rule of the family decides from those facts alone. Static and dynamic
evidence therefore go through the very same rule, and merge on the same code.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from modelcheck.findings import Severity
from modelcheck.targets import Target, TargetSet


@dataclass(frozen=True)
class Match:
    """A rule's claim about one construct.

    ``certain`` is False when a value the claim depends on could not be known (``mode=self.m``);
    the finding then says "may" and is one severity step milder.
    """

    message: str
    certain: bool = True
    fixable: bool = False
    #: the construct is measured to work at the targets the rule flags, so it is only worth a
    #: note (a nearest resize to a shape-derived size): caps the finding at this severity
    at_most: Severity | None = None
    #: the targets of the run the claim matters for (set by :func:`matches_for`)
    targets: tuple[str, ...] = ()


#: The sections of a rule's docstring, in this order (ruff's): the one place a rule is documented.
#: ``## Example`` and ``Use instead:`` are not written there: :meth:`Rule.markdown` renders them
#: from ``bad_example`` and ``good_example``, which the tests run, so every documented example is
#: a checked one. ``--explain``, SARIF rule help and docs/rules.md all print :meth:`Rule.markdown`.
DOC_SECTIONS = ("What it does", "Why is this bad?", "Fix safety")


class Rule:
    """One finding code. A subclass documents itself in its docstring (:data:`DOC_SECTIONS`),
    gives its examples and a one-line summary, and implements the two methods."""

    code: ClassVar[str]
    name: ClassVar[str]
    #: one line, for rule tables and SARIF's shortDescription
    summary: ClassVar[str]
    #: code the rule flags (``## Example``) and the same code written so it does not (``Use instead:``)
    bad_example: ClassVar[str]
    good_example: ClassVar[str]
    #: the target (``name`` or ``name@opset``) at which bad_example must fire and good_example not
    example_target: ClassVar[str] = "caffe2"
    #: modules the examples import as siblings: the examples are checked as files of a package
    #: holding them (an implicit relative import is only one inside a package)
    example_package: ClassVar[tuple[str, ...]] = ()
    #: False for rules only the dynamic pass can see (a lock stored on a module)
    static: ClassVar[bool] = True
    #: the construct breaks when its file is imported (an import Python 3 cannot resolve), so a
    #: model that imported the file has it even where no function of the model ran it
    import_time: ClassVar[bool] = False
    #: the export this rule flags is right for the traced input size only: the smoke test then also
    #: runs it at a second size (:mod:`modelcheck.smoke.second_size`) and reports what happens
    size_dependent: ClassVar[bool] = False
    #: (stage, status, least severity): a finding of this rule at that severity or above predicts the
    #: smoke test's stage ending so (``("caffe2", "mismatch", WARNING)``); ``"coreml/export"`` names
    #: one target's stage of a name every target has; measured in docs/evidence.md
    predicts: ClassVar[tuple[tuple[str, str, Severity], ...]] = ()
    #: which of the measured operator table's probes of its family's APIs this rule decides about at
    #: the targets it has a verdict for: None, all of them; else the probes whose facts include one
    #: of these patterns (``({"ceil_mode": True},)``; ``()`` none: a rule about a name, not an
    #: outcome). The table's own rules (MC5xx) speak for the rest (:func:`modelcheck.rules.operators.deferred`)
    covers: ClassVar[tuple[Mapping[str, Any], ...] | None] = None

    def verdict(self, target: Target) -> Severity | None:
        """How bad the construct is for ``target``; None means harmless there."""
        raise NotImplementedError

    def match_at(self, facts: Any, target: Target) -> Match | None:
        """The claim at one target; most rules' claim does not depend on it (:meth:`match`)."""
        return self.match(facts)

    def match(self, facts: Any) -> Match | None:
        """Does this construct (described by ``facts``) have the problem?"""
        raise NotImplementedError

    def cleared_by(self, facts: Any) -> bool:
        """Do facts only a traced call knows (its input's size) show the construct harmless here, however
        certain the source looked? Tracing then drops the static finding too (``trace.run.refute``)."""
        return False

    @classmethod
    def doc(cls) -> dict[str, str]:
        """The docstring's sections by heading (:data:`DOC_SECTIONS`, in order), each as markdown.

        Raises ValueError when a section is missing, empty, out of order or unknown, so a rule
        cannot ship half documented (tests/test_rule_examples.py reads every rule's).
        """
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in inspect.cleandoc(cls.__doc__ or "").splitlines():
            if line.startswith("## "):
                current = sections.setdefault(line[3:].strip(), [])
            elif current is not None:
                current.append(line)
            elif line.strip():
                raise ValueError(f"{cls.__name__}: text before the first section: {line!r}")
        doc = {heading: "\n".join(lines).strip() for heading, lines in sections.items()}
        if tuple(doc) != DOC_SECTIONS or not all(doc.values()):
            raise ValueError(f"{cls.__name__}: the docstring's sections are {list(doc)}, not {list(DOC_SECTIONS)} "
                             "(each with text)")
        return doc

    def markdown(self) -> str:
        """The rule's documentation: title, summary, then ruff's sections with the examples."""
        doc = self.doc()
        where = ""
        if self.example_target != "caffe2":
            name, _, opset = self.example_target.partition("@")
            where = f"At `--target {name}" + (f" --opset {opset}" if opset else "") + "`:\n"
        return (
            f"# {self.code} {self.name}\n\n{self.summary}\n\n"
            f"## What it does\n{doc['What it does']}\n\n"
            f"## Why is this bad?\n{doc['Why is this bad?']}\n\n"
            f"## Example\n{where}```python\n{self.bad_example.rstrip()}\n```\n\n"
            f"Use instead:\n```python\n{self.good_example.rstrip()}\n```\n\n"
            f"## Fix safety\n{doc['Fix safety']}\n"
        )


def matches_for(rules: Iterable[Rule], facts: Any,
                target: Target | TargetSet) -> Iterator[tuple[Rule, Match, Severity]]:
    """Every rule that fires on ``facts`` at ``target`` (at any member of a set), with the severity it
    fires at: the worst over the members it matters for, which the match names."""
    for rule in rules:
        hits = [(t.name, s, m) for t in target.members
                if (s := rule.verdict(t)) is not None and (m := rule.match_at(facts, t)) is not None]
        if not hits:
            continue
        severity = max((s for _, s, _ in hits), key=lambda s: s.rank)
        match = hits[0][2] if len(hits) == 1 else _merged([m for _, _, m in hits])
        match = replace(match, targets=tuple(name for name, _, _ in hits))
        if not match.certain:
            severity = severity.lowered()
        if match.at_most is not None and match.at_most.rank < severity.rank:
            severity = match.at_most
        yield rule, match, severity


def _merged(matches: list[Match]) -> Match:
    """One claim from a rule's claims at several targets: their messages, each once."""
    first = matches[0]
    if all(m.message == first.message for m in matches):
        return first
    return replace(first, message="; ".join(dict.fromkeys(m.message for m in matches)),
                   certain=all(m.certain for m in matches), fixable=any(m.fixable for m in matches))
