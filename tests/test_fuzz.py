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

import libcst as cst  # noqa: E402
from fuzz_programs import (  # noqa: E402
    ENCODINGS,
    TARGETS,
    TREE_MUTATIONS,
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


# ----- operator programs: every way the operators family's extractor names an API ----------------

#: statements with the operators the table measured, named every way ``FileFacts.api_call`` sees them
OPERATOR_STATEMENTS = (
    "y = torch.pow(x, {value})", "y = x ** {value}", "y = x.pow({value})", "y = torch.std(x, {value})",
    "n = nn.LayerNorm({value})", "n = partial(nn.LayerNorm, eps={value})",
    "s = functools.partial(torch.pow, exponent={value})",
    "c = nn.Conv2d(3, 8, 3, {argument})", "c = partial(nn.Conv2d, {argument})", "conv = nn.Conv2d",
    "c = conv(3, 8, 3, {argument})", "norm = norm or nn.LayerNorm", "n = norm({value})", "y = x.to({dtype})",
    "y = F.pad(x, {value})", "y = POW(x, {value})", "y = power(x, {value})", "y = x.flip({value})", "y = np.flip(x)",
    "k = torch.topk(x, 3, {argument})", "k = x.topk(3, {argument})",
    "y = F.batch_norm(x, m, v, None, None, {argument})",
    "t = f'{{x ** {value}}}'", "y = (lambda x: x ** {value})(x)", "u = nn.ConvTranspose2d(8, 8, 3, {argument})",
    "y = x.clamp({argument})", "y = torch.einsum('ij->ji', x)", "y = x.half()", "a = b = nn.ReLU6",
    "y = b({value})", "d = nn.Conv2d(3, 8, 3,\n    {argument})",
)
OPERATOR_VALUES = ("2", "0.5", "p", "PAD", "'same'", "-1", "(1, 1, 1, 1)", "(0, 0, 0, 0, 1, 1)", "True", "x", "2 ** 3")
OPERATOR_ARGUMENTS = ("padding='same'", "'same'", "1, 'same'", "padding=PAD", "padding_mode='reflect'",
                      "1, 0, 1, 1, 'circular'", "dilation=2", "largest=False", "1, False", "*a", "**k",
                      "training=True", "1, 1, 0, 0, 1, True, 2", "min=0", "0, 1", "PAD", "padding=1", "padding=(2)")
OPERATOR_DTYPES = ("torch.float16", "torch.half", "dtype=torch.half", "device", "'cuda', torch.float16", "DTYPE")
OPERATOR_HEADER = ("import functools\nimport numpy as np\nimport torch\nimport torch.nn as nn\n"
                   "import torch.nn.functional as F\nfrom functools import partial\nfrom torch import pow as power\n\n"
                   "POW = torch.pow\nPAD = 'same'\nDTYPE = torch.float16\n")
#: where a statement goes: module level, the class body, __init__, forward, a def in forward, a helper
PLACES = ("module", "class", "init", "forward", "nested", "helper")


@st.composite
def operator_programs(draw) -> tuple[str, str]:
    """A module with operator statements at random places, then up to two of the fixtures' tree mutations."""
    bodies: dict[str, list[str]] = {place: [] for place in PLACES}
    for _ in range(draw(st.integers(1, 8))):
        statement = draw(st.sampled_from(OPERATOR_STATEMENTS)).format(
            value=draw(st.sampled_from(OPERATOR_VALUES)), argument=draw(st.sampled_from(OPERATOR_ARGUMENTS)),
            dtype=draw(st.sampled_from(OPERATOR_DTYPES)))
        bodies[draw(st.sampled_from(PLACES))].append(statement)

    def block(place: str, indent: str) -> str:
        lines = bodies[place] or ["pass"]
        return "".join(indent + line.replace("\n", "\n" + indent) + "\n" for line in lines)

    text = (OPERATOR_HEADER + block("module", "") + "\n\nclass Net(nn.Module):\n" + block("class", "    ")
            + "\n    def __init__(self, x=None, p=2, norm=None, b=None):\n" + block("init", "        ")
            + "\n    def forward(self, x, p, m, v, a, k, device, norm=None, b=None):\n" + block("forward", "        ")
            + "        def inner(x):\n" + block("nested", "            ") + "        return x\n"
            + "\n\ndef helper(x, p, m, v, a, k, device, norm=None, b=None):\n" + block("helper", "    "))
    for _ in range(draw(st.integers(0, 2))):
        try:
            text = draw(st.sampled_from(TREE_MUTATIONS))(draw, cst.parse_module(text)).code
        except (cst.ParserSyntaxError, cst.CSTValidationError, TypeError, ValueError):
            continue  # a combination libcst refuses to build: not a program
    return "operators_program.py", text


@budget(150)
@given(operator_programs(), targets)
def test_operators_are_found_by_the_pre_screen_and_the_ast_path_as_by_a_full_parse(program, target):
    """The operators family's trigger and its ``ast`` port against a full libcst parse."""
    path, text = program
    check_never_raises(path, text, target)


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
