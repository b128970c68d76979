"""The rule families, found from their modules: a module here that defines ``FAMILY`` is one.

Adding a family is adding a module (see docs/ARCHITECTURE.md, "Adding a rule family"); nothing
here lists them.
"""

from __future__ import annotations

from modelcheck.findings import Severity
from modelcheck.rules.base import Rule
from modelcheck.rules.family import Family, discover_families

FAMILIES: tuple[Family, ...] = discover_families()

ALL_RULES: tuple[Rule, ...] = tuple(rule for family in FAMILIES for rule in family.rules)

RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in ALL_RULES}

FAMILY_OF_CODE: dict[str, Family] = {rule.code: family for family in FAMILIES for rule in family.rules}

#: codes that are not rules of a family but still appear in reports
SYNTAX_ERROR = "MC000"
PSEUDO_CODES = {SYNTAX_ERROR: "the file could not be parsed"}


#: codes whose finding makes the smoke test try a second input size
SIZE_DEPENDENT_CODES = frozenset(rule.code for rule in ALL_RULES if rule.size_dependent)


def codes_predicting(stage: str, status: str, target: str = "") -> dict[str, Severity]:
    """Rule code → the least severity at which its finding predicts ``stage`` (of ``target``) ending
    ``status``; a rule's ``predicts`` names the stage alone or, for one target's, ``target/stage``."""
    names = {stage, f"{target}/{stage}"} if target else {stage}
    return {rule.code: least for rule in ALL_RULES for (s, st, least) in rule.predicts if s in names and st == status}
