"""The rule families. Adding a family: a module with RULES, TRIGGER and extract(), listed here."""

from __future__ import annotations

from types import ModuleType

from modelcheck.rules import pickling, pooling, porting, upsampling
from modelcheck.rules.base import Rule

FAMILIES: tuple[ModuleType, ...] = (pickling, upsampling, pooling, porting)

ALL_RULES: tuple[Rule, ...] = tuple(rule for family in FAMILIES for rule in family.RULES)

RULES_BY_CODE: dict[str, Rule] = {rule.code: rule for rule in ALL_RULES}

#: codes that are not rules of a family but still appear in reports
SYNTAX_ERROR = "MC000"
PSEUDO_CODES = {SYNTAX_ERROR: "the file could not be parsed"}
