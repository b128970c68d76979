"""Fuzzing the static pass and every fixer: mutated fixtures and hypothesmith programs.

The properties and generators are in ``fuzz_programs.py``. Here they run on a bounded budget
with ``derandomize=True``: the same examples on every run, so a red CI run reproduces by running
this file again. ``python benchmarks/fuzz.py --minutes 10`` runs them much longer with fresh
random examples, ``MODELCHECK_FUZZ_SCALE`` times as many per property, and keeps the failing
ones in ``.hypothesis/`` to be replayed first next time. Imports no torch.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("hypothesmith")  # in the test extra; the long run installs it itself
# Not marked slow: about 27 s in all on an idle 2-core machine (most of it the fix property), no torch.
# hypothesmith compiles what it generates and Python warns about odd code ('str' is not callable).
pytestmark = pytest.mark.filterwarnings("ignore::SyntaxWarning")

from fuzz_programs import (  # noqa: E402
    ENCODINGS,
    TARGETS,
    check_files,
    check_fixes,
    check_never_raises,
    check_port_source,
    hypothesmith_programs,
    mutated_fixtures,
    programs,
)

SCALE = float(os.environ.get("MODELCHECK_FUZZ_SCALE", "1"))
LONG = SCALE > 1


def budget(examples: int) -> settings:
    """``examples`` per property in CI, derandomized and without a database; SCALE times as
    many, random and remembered in ``.hypothesis/``, in the long run."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=not LONG,
        database=settings.default.database if LONG else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


targets = st.sampled_from(TARGETS)


@budget(100)
@given(programs(), targets)
def test_check_source_never_raises(program, target):
    path, text = program
    check_never_raises(path, text, target)


@budget(40)
@given(hypothesmith_programs(), targets)
def test_check_source_never_raises_on_hypothesmith_programs(program, target):
    path, text = program
    check_never_raises(path, text, target)


@budget(120)
@given(mutated_fixtures(), targets, st.booleans())
def test_every_fix_applies_parses_and_is_idempotent(program, target, verifiable):
    path, text = program
    check_fixes(path, text, target, verifiable=verifiable)


@budget(100)
@given(programs())
def test_port_source_keeps_lines_and_parse_and_is_idempotent(program):
    path, text = program
    check_port_source(path, text)


@budget(40)
@given(mutated_fixtures(max_mutations=3), st.sampled_from(ENCODINGS), targets)
def test_files_on_disk_are_read_checked_and_planned(program, how, target):
    path, text = program
    with tempfile.TemporaryDirectory() as tmp:
        check_files(Path(tmp), Path(path).name, text, how, target)
