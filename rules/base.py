"""What a rule is: a code, its documentation, a per-target verdict and a predicate over facts.

A rule family (one module in ``rules/``) extracts *facts* about a construct — an upsampling
call's mode, a pool's ``ceil_mode`` — from source (libcst) or from a live module (the dynamic
pass), and each rule of the family decides from those facts alone. Static and dynamic
evidence therefore go through the very same rule, and merge on the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from modelcheck.findings import Severity
from modelcheck.targets import Target


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


class Rule:
    """One finding code. Subclasses fill in the documentation and the two methods."""

    code: ClassVar[str]
    name: ClassVar[str]
    summary: ClassVar[str]
    rationale: ClassVar[str]
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

    def verdict(self, target: Target) -> Severity | None:
        """How bad the construct is for ``target``; None means harmless there."""
        raise NotImplementedError

    def match(self, facts: Any) -> Match | None:
        """Does this construct (described by ``facts``) have the problem?"""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {
            "code": self.code,
            "name": self.name,
            "summary": self.summary,
            "rationale": self.rationale,
            "bad_example": self.bad_example,
            "good_example": self.good_example,
        }


class Family(Protocol):
    """A rule family module: the rules plus a static extractor of (node, facts) pairs.

    ``TRIGGER`` is a compiled regex that the static pre-screen runs on code with strings and
    comments masked out: a function (or module-level statement) with no match cannot hold a
    finding of the family, so libcst never parses it. A family may also set ``NESTED_DEFS =
    True``: defs and classes nested in functions are then hot too (MC102/MC103 have no word to
    match). Keep triggers a superset of what ``extract`` can report, and starting with a
    literal where possible (``\\blambda\\b`` scans 50x slower than ``lambda(?<!\\wlambda)``).
    """

    RULES: tuple[Rule, ...]
    TRIGGER: Any  # compiled regex, see above

    def extract(self, source: Any) -> Iterable[tuple[Any, Any]]: ...


def matches_for(rules: Iterable[Rule], facts: Any, target: Target) -> Iterator[tuple[Rule, Match, Severity]]:
    """Every rule that fires on ``facts`` at ``target``, with the severity it fires at."""
    for rule in rules:
        severity = rule.verdict(target)
        if severity is None:
            continue
        match = rule.match(facts)
        if match is None:
            continue
        if not match.certain:
            severity = severity.lowered()
        if match.at_most is not None and match.at_most.rank < severity.rank:
            severity = match.at_most
        yield rule, match, severity
