"""Every rule's examples, which are also its documentation (``## Example`` / ``Use instead:``):
the bad example draws the rule's code at the rule's example target, the good one does not.

One test over all rules, found from the families (Fixit-style: the examples live on the rule,
the test only runs them).
"""

from __future__ import annotations

import pytest
from modelcheck.rules import ALL_RULES
from modelcheck.rules.base import Rule
from static_helpers import check_examples, findings_in, target_of

STATIC = [rule for rule in ALL_RULES if rule.static]
DYNAMIC_ONLY = [rule for rule in ALL_RULES if not rule.static]


@pytest.mark.parametrize("rule", STATIC, ids=lambda rule: rule.code)
def test_bad_example_fires_and_good_example_does_not(rule: Rule) -> None:
    check_examples(rule)


@pytest.mark.parametrize("rule", DYNAMIC_ONLY, ids=lambda rule: rule.code)
def test_the_static_pass_does_not_claim_what_only_a_run_shows(rule: Rule) -> None:
    """A lock on a module, an input size: invisible in source, so the static pass stays silent."""
    hits = findings_in(rule.bad_example, rule.example_target)
    assert not [f for f in hits if f.code == rule.code]
    assert target_of(rule.example_target)  # the example target parses


def test_every_family_has_examples_checked() -> None:
    assert STATIC and {rule.code[:3] for rule in STATIC} >= {"MC1", "MC2", "MC3", "MC4"}
