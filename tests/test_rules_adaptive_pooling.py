"""MC601/MC602: adaptive pooling that Caffe2 cannot run or the exporter cannot write.

The static cases are the fixture's ``# expect:`` markers; the dynamic ones (an output size known
only when the model runs, an input size it does not divide) and the runtimes' real behaviour are
re-measured here on torch, ONNX Runtime and the real Caffe2 (slow).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_caffe2
from static_helpers import FIXTURES, expected, found

ADAPTIVE = FIXTURES / "adaptive_pooling.py"
MODELCHECK = Path(sys.executable).with_name("modelcheck")

MODELS = '''
import torch.nn as nn
import torch.nn.functional as F


class Pyramid(nn.Module):
    """PSP-style pooling: the sizes are a constructor argument, unknown statically."""

    def __init__(self, sizes=(1, 5)):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.stages = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in sizes)

    def forward(self, x):
        x = self.conv(x)
        return [stage(x) for stage in self.stages]


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.conv(x), 1)


class Mean(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).mean((-2, -1), keepdim=True)
'''


def test_every_global_average_pool_is_found_at_its_line_and_nothing_else():
    assert sum(expected(ADAPTIVE).values()) >= 6
    assert found(ADAPTIVE, prefix="MC6") == expected(ADAPTIVE)


def test_only_caffe2_is_affected():
    assert found(ADAPTIVE, "onnx@17", prefix="MC6") == {}
    assert found(ADAPTIVE, "caffe2@11", prefix="MC6") == expected(ADAPTIVE)


def _run(tmp_path: Path, model: str, *flags: str) -> dict:
    (tmp_path / "models.py").write_text(MODELS)
    proc = subprocess.run([str(MODELCHECK), "models.py", "--model", f"models.py:{model}", "--input-shape",
                           "1,3,35,35", "--format", "json", *flags],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_tracing_finds_both_at_the_layers_line_with_the_traced_sizes(tmp_path: Path):
    data = _run(tmp_path, "Pyramid", "--no-smoke")
    by_code = {f["code"]: f for f in data["findings"] if f["model"] == "models.py:Pyramid"}
    assert set(by_code) == {"MC601", "MC602"}
    line = MODELS.splitlines().index("        self.stages = nn.ModuleList(nn.AdaptiveAvgPool2d(s) for s in sizes)") + 1
    assert {f["line"] for f in by_code.values()} == {line}
    assert "33×33" in by_code["MC602"]["message"]  # a 35×35 input after a 3×3 conv


@pytest.mark.slow
@pytest.mark.caffe2
def test_caffe2_fails_on_global_average_pool_and_runs_the_mean(tmp_path: Path):
    """The measured facts the family rests on, on the real runtimes (docs/evidence.md)."""
    require_caffe2()
    head = {s["name"]: s for s in _run(tmp_path, "Head")["stages"]}
    assert "GlobalAveragePool" in head["onnx_check"]["detail"]
    assert head["onnxruntime"]["status"] == "passed"
    assert head["caffe2"]["status"] == "failed" and "kernel" in head["caffe2"]["detail"]
    assert head["caffe2"]["predicted_by"] == ["MC601"]
    mean = {s["name"]: s for s in _run(tmp_path, "Mean")["stages"]}
    assert "ReduceMean" in mean["onnx_check"]["detail"]
    assert mean["caffe2"]["status"] == "passed"


@pytest.mark.slow
def test_an_output_size_that_does_not_divide_fails_the_export_as_predicted(tmp_path: Path):
    stages = {s["name"]: s for s in _run(tmp_path, "Pyramid", "--target", "onnx")["stages"]}
    assert stages["export"]["status"] == "failed"
    assert "not factor of input size" in stages["export"]["detail"]
    assert stages["export"]["predicted_by"] == ["MC602"]
