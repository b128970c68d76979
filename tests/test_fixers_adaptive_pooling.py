"""MC601 fixer: global average pooling → a mean over the spatial dims, which Caffe2 runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_caffe2

MODELCHECK = Path(sys.executable).with_name("modelcheck")

BEFORE = '''import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool1d(1))

    def forward(self, x):
        y = self.conv(x)
        g = F.adaptive_avg_pool2d(y + 1, 1)
        s = self.squeeze(y.flatten(2)).unsqueeze(-1)
        return self.pool(y) + g + s
'''


def _modelcheck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELCHECK), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_static_only_leaves_it_for_a_model_to_verify(tmp_path: Path):
    """A mean sums in another order: equal to float rounding, which only a built model can show."""
    (tmp_path / "net.py").write_text(BEFORE)
    proc = _modelcheck(tmp_path, "net.py", "--static-only", "--fix", "--select", "MC6")
    assert (tmp_path / "net.py").read_text() == BEFORE
    assert "3 fixable" in proc.stdout


@pytest.mark.slow
def test_fix_writes_the_mean_and_one_helper(tmp_path: Path):
    (tmp_path / "net.py").write_text(BEFORE)
    flags = ("net.py", "--model", "net.py:Net", "--input-shape", "1,3,17,17", "--no-smoke", "--fix", "--select", "MC6")
    proc = _modelcheck(tmp_path, *flags)
    fixed = (tmp_path / "net.py").read_text()
    assert "(y + 1).mean((-2, -1), keepdim=True)" in fixed, proc.stdout + proc.stderr
    assert "self.pool = _GlobalAvgPool(2)" in fixed and "nn.Sequential(_GlobalAvgPool(1))" in fixed
    assert fixed.count("class _GlobalAvgPool(torch.nn.Module):") == 1 and "import torch\n" in fixed
    compile(fixed, "net.py", "exec")
    again = _modelcheck(tmp_path, *flags)
    assert (tmp_path / "net.py").read_text() == fixed, again.stdout


@pytest.mark.slow
@pytest.mark.caffe2
def test_fixed_model_keeps_its_outputs_and_runs_in_caffe2(tmp_path: Path):
    require_caffe2()
    (tmp_path / "net.py").write_text(BEFORE)
    spec = ["net.py", "--model", "net.py:Net", "--input-shape", "1,3,17,17", "--format", "json"]
    before = json.loads(_modelcheck(tmp_path, *spec).stdout)
    assert {s["name"]: s["status"] for s in before["stages"]}["caffe2"] == "failed"
    fixed = json.loads(_modelcheck(tmp_path, *spec, "--fix").stdout)
    records = [r for r in fixed["fixes"] if r["code"] == "MC601"]
    assert len(records) == 3 and all(r["status"] == "applied" for r in records), records
    after = json.loads(_modelcheck(tmp_path, *spec).stdout)
    assert {s["name"]: s["status"] for s in after["stages"]} == {
        "export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}
    assert not [f for f in after["findings"] if f["code"] == "MC601"]
