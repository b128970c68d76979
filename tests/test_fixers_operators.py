"""MC502 fixer: a square written as a power (``Pow``, which Caffe2 fails to run) → a product."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import require_caffe2
from modelcheck.config import Config
from modelcheck.fix.run import plan_file
from modelcheck.fixers.base import Applicability, Decline, Edit, Exactness, FixContext, apply_edits
from modelcheck.static.run import check_source
from modelcheck.static.source import SourceFile
from modelcheck.targets import make_target

MODELCHECK = Path(sys.executable).with_name("modelcheck")


def fix(text: str, target: str = "caffe2", opset: int = 9, traced: bool = False) -> tuple[str, list]:
    """The text after the MC502 edits, and every decision; ``traced``: as if tracing confirmed each
    finding (a tensor operand), which makes them certain."""
    findings = [f for f in check_source("net.py", text, make_target(target, opset), Config()) if f.code == "MC502"]
    if traced:
        findings = [f.with_(certain=True) for f in findings]
    source = SourceFile.parse("net.py", text)
    decisions = plan_file(source, findings, FixContext(target, opset))
    return apply_edits(source, [d for d in decisions if isinstance(d, Edit)]), decisions


def forward(*lines: str) -> str:
    body = "".join(f"        {line}\n" for line in lines)
    return f"import torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n    def forward(self, x, y):\n{body}"


def test_a_named_operand_becomes_a_product_wherever_it_stands():
    fixed, decisions = fix(forward("a = x ** 2", "b = x.pow(2).sum()", "c = torch.pow(x, 2)",
                                   "d = y / self.s ** 2 + x ** 2", "return [x ** 2, (x) ** 2.0]"))
    assert "a = x * x\n" in fixed and "b = (x * x).sum()\n" in fixed and "c = x * x\n" in fixed
    assert "d = y / (self.s * self.s) + x * x\n" in fixed and "return [x * x, x * x]\n" in fixed
    assert all(isinstance(d, Edit) and d.applicability is Applicability.SAFE and d.exactness is Exactness.BITWISE
               for d in decisions) and len(decisions) == 7
    compile(fixed, "net.py", "exec")


def test_an_expression_operand_becomes_torch_square_only_when_known_to_be_a_tensor():
    text = forward("a = torch.pow(x - y, 2)", "return (x + 1) ** 2")
    fixed, decisions = fix(text)
    assert "a = torch.square(x - y)\n" in fixed and "return (x + 1) ** 2\n" in fixed
    assert isinstance(decisions[1], Decline) and "may not be a tensor" in decisions[1].reason
    fixed, _ = fix(text, traced=True)
    assert "return torch.square(x + 1)\n" in fixed


def test_what_is_not_a_square_of_a_visible_operand_is_left_alone():
    text = forward("import functools", "p = functools.partial(torch.pow, exponent=2)", "a = x ** 3",
                   "b = x ** 0.5", "return p(x) + a + b")
    fixed, decisions = fix(text)
    assert fixed == text
    assert [type(d) for d in decisions] == [Decline] and "partial" in decisions[0].reason


def test_only_where_the_table_says_pow_fails_and_the_product_runs():
    text = forward("return x ** 2")
    assert fix(text, "caffe2", 11)[0] == forward("return x * x")
    assert fix(text, "onnx", 17) == (text, [])  # ONNX Runtime runs Pow: no finding, nothing to fix


def test_the_product_is_the_power_bit_for_bit():
    """What ``Exactness.BITWISE`` rests on: PyTorch's ``pow(x, 2)`` is ``x * x``, and
    ``torch.square`` is ``pow(x, 2)``, at every magnitude (denormals and overflow included)."""
    x = torch.cat([torch.randn(100_000) * scale for scale in (1e-30, 1e-3, 1.0, 1e3, 1e19)])
    assert torch.equal(x ** 2, x * x) and torch.equal(torch.pow(x, 2.0), x * x) and torch.equal(torch.square(x), x * x)
    assert torch.equal(x.double() ** 2, x.double() * x.double())


BEFORE = '''import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        energy = (y - y.mean()) ** 2
        return y.pow(2) + energy / torch.pow(y, 2).mean()
'''


def _modelcheck(cwd: Path, *args: str) -> dict:
    proc = subprocess.run([str(MODELCHECK), *args], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
@pytest.mark.caffe2
def test_fixed_model_keeps_its_outputs_bit_for_bit_and_runs_in_caffe2(tmp_path: Path):
    require_caffe2()
    (tmp_path / "net.py").write_text(BEFORE)
    spec = ["net.py", "--model", "net.py:Net", "--input-shape", "1,3,17,17", "--format", "json"]
    before = _modelcheck(tmp_path, *spec)
    caffe2 = {s["name"]: s for s in before["stages"]}["caffe2"]
    assert caffe2["status"] == "failed" and caffe2["predicted_by"] == ["MC502"]
    fixed = _modelcheck(tmp_path, *spec, "--fix")
    records = [r for r in fixed["fixes"] if r["code"] == "MC502"]
    assert len(records) == 3 and all(r["status"] == "applied" and r["verified"] for r in records), records
    text = (tmp_path / "net.py").read_text()
    assert "energy = torch.square(y - y.mean())" in text and "return y * y + energy / (y * y).mean()" in text
    after = _modelcheck(tmp_path, *spec)
    assert {s["name"]: s["status"] for s in after["stages"]} == {
        "export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}
    assert not [f for f in after["findings"] if f["code"] == "MC502"]
