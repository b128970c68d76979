"""MC1xx: what torch.save(model) cannot pickle, found in source without importing torch."""

from __future__ import annotations

import pytest
from static_helpers import FIXTURES, expected, findings, findings_in, found

STORED = FIXTURES / "pickling_stored.py"
TRANSIENT = FIXTURES / "pickling_transient.py"


def test_every_stored_lambda_and_local_def_is_found_at_its_line():
    assert sum(expected(STORED).values()) >= 20
    assert found(STORED, prefix="MC1") == expected(STORED)


def test_transient_and_module_level_callables_are_not_findings():
    """Module-level defs, operator.*, partial of module-level functions, filter/sorted/map
    lambdas, nested defs that are only called, lambdas in strings and comments, a plain class."""
    assert found(TRANSIENT, prefix="MC1") == {}


@pytest.mark.parametrize("target", ["caffe2", "caffe2@11", "onnx@9", "onnx@17"])
def test_pickling_fails_whatever_the_target(target):
    """torch.save is not about export: the verdict does not depend on the target."""
    assert found(STORED, target, prefix="MC1") == expected(STORED)


def test_finding_points_at_the_lambda_and_says_how_it_is_stored():
    by_line = {f.location.line: f for f in findings(STORED) if f.code == "MC101"}
    lines = STORED.read_text().splitlines()
    for finding in by_line.values():
        line = lines[finding.location.line - 1]
        assert line[finding.location.column - 1:].startswith("lambda"), (finding, line)
    lambda_map = next(f for f in by_line.values() if "LambdaMap(lambda" in f.source_line)
    assert "passed to LambdaMap(...)" in lambda_map.message
    assert "torch.save(model) fails" in lambda_map.message
    act = next(f for f in by_line.values() if "self.act = " in f.source_line)
    assert "assigned to self.act" in act.message


def test_local_def_finding_points_at_its_definition():
    """Where the closure is written (what the user must move), not where it is stored."""
    scaled = next(f for f in findings(STORED) if f.code == "MC102" and "scaled" in f.message)
    assert scaled.source_line.strip().startswith("def scaled(")
    assert "assigned to self.scale" in scaled.message


def test_uncertain_storage_says_may_and_is_milder():
    """self.fn in a class whose base is defined elsewhere may not be a module."""
    mystery = next(f for f in findings(STORED) if "self.fn = " in (f.source_line or ""))
    assert mystery.severity.value == "warning"
    assert "may" in mystery.message


def test_fixable_only_when_the_lambda_closes_over_nothing_local():
    """A lambda that reads only its parameters and module-level names becomes a module-level
    function as is; one that reads a local (planes) needs more than a rename."""
    result = {f.source_line.strip(): f.fixable for f in findings(STORED) if f.code == "MC101"}
    assert result["self.act = lambda x: x * 2  # expect: MC101 error"] is True
    pad = next(fixable for line, fixable in result.items() if "F.pad" in line)
    assert pad is False


@pytest.mark.parametrize(
    "source",
    [
        "import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n        self.f = lambda x: x\n",
        "from torch import nn\nclass M(nn.Module):\n    def __init__(self):\n        self.f = lambda x: x\n",
        "import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n        self.f = lambda x: x\n",
        "from torch.nn import Module\nclass M(Module):\n    def __init__(self):\n        self.f = lambda x: x\n",
        "import torch.nn as nn\nclass B(nn.Sequential):\n    pass\nclass M(B):\n    def __init__(self):\n"
        "        self.f = lambda x: x\n",
    ],
    ids=["import-as", "from-torch", "torch-dotted", "from-torch-nn", "inherited"],
)
def test_module_classes_are_recognised_however_nn_is_imported(source):
    hits = findings_in(source)
    assert [(f.code, f.severity.value) for f in hits] == [("MC101", "error")]


def test_a_lambda_whose_default_is_evaluated_in_place_is_not_marked_fixable():
    """``lambda x, i=i: ...`` cannot move to module level (``i`` is evaluated where it is written):
    the report must not promise a fix that --fix then declines."""
    source = ("import torch.nn as nn\nclass M(nn.Module):\n    def __init__(self):\n"
              "        self.heads = [lambda x, i=i: x * i for i in range(3)]\n        self.f = lambda x, k=2: x * k\n")
    assert [(f.code, f.fixable) for f in findings_in(source)] == [("MC101", False), ("MC101", True)]
