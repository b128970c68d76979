"""MC101 fixer: lambdas on modules become module-level functions; bit-identical, picklable."""

from __future__ import annotations

import ast
import importlib.util
import io
import sys
from pathlib import Path

import pytest
from modelcheck.config import Config
from modelcheck.fix.run import make_plans
from modelcheck.fixers.base import FixContext, module_name_usable
from modelcheck.static.run import check_source
from modelcheck.static.source import SourceFile
from modelcheck.targets import make_target

FIXTURES = Path(__file__).parent / "fixtures" / "fixers"


def fix_text(path: Path, text: str, *, unsafe: bool = False, verifiable: bool = False):
    """(fixed text, plan) as --fix would produce for one file (file written to ``path`` first)."""
    path.write_text(text)
    findings = check_source(str(path), text, make_target("caffe2"), Config())
    plans = make_plans({str(path): text}, findings, FixContext("caffe2", 9), unsafe=unsafe, verifiable=verifiable)
    if not plans:
        return text, None
    return plans[0].fixed, plans[0]


def reasons(plan) -> list[str]:
    return [d.reason for d in plan.decisions if type(d).__name__ == "Decline"]


def test_fixture_before_after(tmp_path):
    before = (FIXTURES / "lambdas_before.py").read_text()
    fixed, plan = fix_text(tmp_path / "lambdas.py", before)
    assert fixed == (FIXTURES / "lambdas_after.py").read_text()
    assert len(plan.chosen) == 7 and not reasons(plan)


def test_fixed_code_never_imports_modelcheck():
    tree = ast.parse((FIXTURES / "lambdas_after.py").read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name and name.startswith("modelcheck")]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickle looks classes and functions up by module name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_fixed_fixture_pickles_with_identical_weights_tree_and_bits():
    import torch

    before = _load(FIXTURES / "lambdas_before.py", "mc_lambdas_before")
    after = _load(FIXTURES / "lambdas_after.py", "mc_lambdas_after")
    original, fixed = before.net.eval(), after.net.eval()
    fixed.load_state_dict(original.state_dict(), strict=True)
    assert list(fixed.state_dict()) == list(original.state_dict())
    assert [(n, type(m).__name__) for n, m in fixed.named_modules()] == \
        [(n, type(m).__name__) for n, m in original.named_modules()]
    with torch.no_grad():
        for seed in range(3):
            x = torch.randn(2, 3, 9, 7, generator=torch.Generator().manual_seed(seed))
            assert torch.equal(fixed(x), original(x))
    with pytest.raises(Exception, match=r"lambda|local object"):
        torch.save(original, io.BytesIO())
    buffer = io.BytesIO()
    torch.save(fixed, buffer)  # the promise of MC101: torch.save(model) works
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        x = torch.randn(1, 3, 5, 5)
        assert torch.equal(again(x), original(x))


def test_names_describe_and_never_collide(tmp_path):
    text = (
        "import torch.nn as nn\n\n"
        "def _identity(x):\n    return x\n\n"
        "_identity_2 = 3\n\n"
        "class Wrap(nn.Module):\n"
        "    def __init__(self, fn):\n        super().__init__()\n        self.fn = fn\n\n"
        "a = Wrap(lambda x: x)\n"
        "b = Wrap(lambda x:  x)\n"
        "c = Wrap(lambda x: x.reshape(x.shape[0], -1))\n"
        "d = Wrap(lambda a, b: a * b)\n"
        "e = Wrap(lambda a, b: b - a)\n"
        "f = Wrap(lambda x: nn.functional.relu(x))\n"
        "g = Wrap(lambda x: x.view(1, -1) if x.dim() == 1 else x)\n"
    )
    fixed, _ = fix_text(tmp_path / "names.py", text)
    assert "a = Wrap(_identity_3)" in fixed and "b = Wrap(_identity_3)" in fixed  # one shared function
    assert fixed.count("def _identity_3(") == 1
    assert "c = Wrap(_flatten)" in fixed
    assert "g = Wrap(_row_if_1d)" in fixed
    assert "d = Wrap(operator.mul)" in fixed and "import operator\n" in fixed
    assert "e = Wrap(_lambda_17)" in fixed  # b - a is not operator.sub(a, b)
    assert "f = Wrap(_relu)" in fixed
    ast.parse(fixed)


def test_operator_is_not_used_when_the_name_is_taken(tmp_path):
    text = (
        "import torch.nn as nn\n\n"
        "class Wrap(nn.Module):\n"
        "    def __init__(self, fn, operator=None):\n        super().__init__()\n        self.fn = fn\n\n"
        "s = Wrap(lambda x, y: x + y)\n"
    )
    fixed, _ = fix_text(tmp_path / "op.py", text)
    assert "s = Wrap(_add)" in fixed and "import operator" not in fixed


def test_closure_over_a_parameter_becomes_partial(tmp_path):
    text = (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, scale, bias=0.0):\n"
        "        super().__init__()\n"
        "        self.act = lambda x, *rest: x * scale + bias\n"
    )
    fixed, _ = fix_text(tmp_path / "closure.py", text)
    assert "functools.partial(_lambda_6, bias=bias, scale=scale)" in fixed
    assert "def _lambda_6(x, *rest, bias, scale):" in fixed
    (tmp_path / "closure_fixed.py").write_text(fixed)
    original = _load(tmp_path / "closure.py", "mc_closure_before").Net(3.0, bias=1.0)
    lifted = _load(tmp_path / "closure_fixed.py", "mc_closure_after").Net(3.0, bias=1.0)
    assert lifted.act(2.0, "ignored") == original.act(2.0, "ignored") == 7.0
    import pickle

    assert pickle.loads(pickle.dumps(lifted.act))(2.0) == 7.0  # a partial of a module-level function
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(original.act)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("        self.hooks = [Wrap(lambda x: x + k) for k in range(3)]\n", "comprehension variable"),
        ("        s = 1\n        self.f = Wrap(lambda x: x * s)\n        s = 2\n", "assigned more than once"),
        ("        self.f = Wrap(lambda x: x * s)\n        s = 2\n", "after the lambda"),
        ("        if flag:\n            s = 2\n        self.f = Wrap(lambda x: x * s)\n", "plain assignment"),
        ("        self.f = Wrap(lambda x, n=len(name): x * n)\n", "default"),
        ("        self.f = Wrap(lambda x: super().forward(x))\n", "super()"),
    ],
)
def test_inexact_lifts_are_declined_with_the_reason(tmp_path, body, why):
    text = (
        "import torch.nn as nn\n\n"
        "class Wrap(nn.Module):\n"
        "    def __init__(self, fn):\n        super().__init__()\n        self.fn = fn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, flag, name='ab'):\n"
        "        super().__init__()\n" + body
    )
    fixed, plan = fix_text(tmp_path / "declined.py", text)
    assert fixed == text
    assert plan is not None and any(why in reason for reason in reasons(plan)), reasons(plan)


def test_tab_indented_file_gets_tab_indented_functions(tmp_path):
    text = (
        "import torch.nn as nn\n\n"
        "class Lambda(nn.Module):\n"
        "\tdef __init__(self, fn):\n\t\tsuper().__init__()\n\t\tself.fn = fn\n\n"
        "net = nn.Sequential(\n\tLambda(lambda x: x),\n)\n"
    )
    fixed, _ = fix_text(tmp_path / "tabs.py", text)
    assert "def _identity(x):\n\t# Replaces `lambda x: x`:" in fixed
    assert "\treturn x\n" in fixed
    ast.parse(fixed)


def test_second_fix_changes_nothing(tmp_path):
    fixed, _ = fix_text(tmp_path / "once.py", (FIXTURES / "lambdas_before.py").read_text())
    again, plan = fix_text(tmp_path / "once.py", fixed)
    assert again == fixed
    assert plan is None  # no MC101 finding left to plan for


def test_a_lambda_inside_a_lifted_lambda_is_fixed_in_the_same_pass(tmp_path):
    """Found by fuzzing: the inner lambda was skipped, then flagged (and lifted) by a second --fix
    once the outer one had become a module-level function."""
    text = (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.conv = lambda: nn.Conv2d(lambda: 3, 4, 3)\n"
        "        self.wrap = lambda x: Wrap(lambda: x)\n"
    )
    fixed, _ = fix_text(tmp_path / "nested.py", text)
    assert not [node for node in ast.walk(ast.parse(fixed)) if isinstance(node, ast.Lambda)]
    assert "return Wrap(functools.partial(_lambda_7, x=x))" in fixed  # the outer lambda's parameter
    again, plan = fix_text(tmp_path / "nested.py", fixed)
    assert again == fixed and plan is None

def test_a_lifted_lambda_keeps_the_other_fixes_made_inside_it(tmp_path):
    text = (
        "import torch.nn as nn\nimport torch.nn.functional as F\n\n"
        "class Lambda(nn.Module):\n"
        "    def __init__(self, fn):\n        super().__init__()\n        self.fn = fn\n\n"
        "up = Lambda(lambda x: F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False))\n"
    )
    verified, _ = fix_text(tmp_path / "nested.py", text, verifiable=True)
    assert "def _interpolate(x):" in verified
    assert "    return _ExactBilinearUpsample(scale_factor=2, align_corners=False)(x)\n" in verified
    alone, _ = fix_text(tmp_path / "nested.py", text, verifiable=False)  # the upsampling fix is held back
    assert "    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)\n" in alone
    assert "_ExactBilinearUpsample" not in alone


@pytest.mark.slow
def test_fix_on_a_lua_converted_file_verifies_on_the_discovered_model(tmp_path):
    """The seed's own command, small: ``modelcheck resnext.py --fix`` with no --model finds the model
    in the file and verifies the fix on it."""
    import json
    import shutil
    import subprocess

    path = tmp_path / "resnext.py"
    shutil.copy(FIXTURES / "lambdas_before.py", path)
    command = [str(Path(sys.executable).with_name("modelcheck")), "resnext.py", "--fix", "--no-smoke",
               "--input-shape", "1,3,32,32", "--format", "json"]
    report = json.loads(subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600).stdout)
    assert "models: picked resnext.py:net (module-level nn.Module instance)" in report["notes"]
    assert {(f["status"], f["verified"]) for f in report["fixes"]} == {("applied", True)}
    assert any("bit-identical outputs" in note for note in report["notes"])
    assert any("torch.save(model) failed before the fix" in n and n.endswith("works now") for n in report["notes"])
    assert report["models"][0]["pickle"]["ok"] is True and report["findings"] == []
    fixed = path.read_bytes()
    again = json.loads(subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600).stdout)
    assert path.read_bytes() == fixed and again["fixes"] == [] and "nothing to fix" in again["notes"]


@pytest.mark.parametrize(
    ("code", "usable"),
    [
        ("import operator\n", True),
        ("x = 1\n", True),  # unused: an import is added
        ("f(operator=1)\n", True),  # a keyword name binds nothing
        ("import operator\n\ndef f(operator):\n    pass\n", False),
        ("from ops import operator\n", False),
        ("import numpy as operator\n", False),
        ("for operator in []:\n    pass\n", False),
        ("operator: int = 3\n", False),
        ("import operator\n\nclass operator:\n    pass\n", False),
        ("y = [1 for operator in z]\n", False),
        ("with open(p) as operator:\n    pass\n", False),
        ("print(operator)\n", False),  # read but bound elsewhere (a star import, a builtin)
    ],
)
def test_operator_is_used_only_where_the_name_means_the_module(code, usable):
    """``operator.add`` in fixed code must mean the standard module, whatever else the file binds."""
    assert module_name_usable(SourceFile.parse("m.py", code), "operator") is usable
