"""The second_size stage: an export a rule calls right "for the traced input size only" is run at
another size too (ONNX Runtime, exported again with free spatial sizes) and compared with PyTorch there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from modelcheck.smoke.second_size import candidates

MODELCHECK = [sys.executable, "-m", "modelcheck"]

CEIL_POOL = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)

    def forward(self, x):
        return self.pool(self.conv(x))
'''

SHAPE_SIZED_NEAREST = '''
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)

    def forward(self, x):
        return F.interpolate(self.conv(x), size=x.shape[2:], mode="nearest")
'''

PLAIN = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(x))
'''


def test_second_sizes_change_every_spatial_dimension_and_nothing_else() -> None:
    assert candidates((1, 3, 33, 33)) == [(1, 3, 50, 50), (1, 3, 64, 64)]
    assert candidates((2, 1, 224, 160)) == [(2, 1, 337, 241), (2, 1, 352, 256)]
    assert candidates((4, 10)) == []  # no spatial dimension: nothing to try


def _check(tmp_path: Path, source: str, *args: str) -> dict:
    (tmp_path / "net.py").write_text(textwrap.dedent(source))
    done = subprocess.run([*MODELCHECK, "net.py", "--model", "net.py:Net", "--input-shape", "1,3,33,33",
                           "--format", "json", *args], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def _stages(doc: dict) -> dict[str, dict]:
    return {stage["name"]: stage for stage in doc["stages"]}


@pytest.mark.slow
def test_ceil_mode_pooling_at_opset_9_is_tied_to_the_traced_size_and_the_stage_says_so(tmp_path: Path) -> None:
    """MC301: the opset-9 exporter computes ceil_mode's padding for the traced size; with free
    sizes it refuses (get_pool_ceil_padding), which the stage reports, predicted by MC301."""
    stages = _stages(_check(tmp_path, CEIL_POOL, "--target", "onnx", "--opset", "9"))
    assert stages["onnxruntime"]["status"] == "passed"  # right at the traced size
    second = stages["second_size"]
    assert second["status"] == "failed" and "get_pool_ceil_padding" in second["detail"]
    assert second["predicted_by"] == ["MC301"] and second["location"]["line"] == 9
    assert second["target"] == "onnx"


@pytest.mark.slow
def test_a_shape_sized_nearest_upsample_holds_at_a_second_size(tmp_path: Path) -> None:
    """MC203 at nearest: the size goes through Shape/Div into Upsample's scales, so it follows the
    input: measured right at 49×49 too (the rule only notes it; the stage shows it)."""
    stages = _stages(_check(tmp_path, SHAPE_SIZED_NEAREST.replace("33", "32"), "--target", "onnx", "--opset", "9"))
    second = stages["second_size"]
    assert second["status"] == "passed", second["detail"]
    assert "at 1×3×50×50 (traced 1×3×33×33)" in second["detail"]


@pytest.mark.slow
def test_no_size_dependent_finding_no_second_size(tmp_path: Path) -> None:
    doc = _check(tmp_path, PLAIN, "--target", "onnx", "--opset", "9")
    assert "second_size" not in _stages(doc)
    assert all(stage["status"] == "passed" for stage in doc["stages"])
