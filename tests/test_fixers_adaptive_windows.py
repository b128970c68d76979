"""MC602 fixer: adaptive pooling to a size that does not divide its input, as explicit windows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import require_caffe2
from modelcheck.fixers.adaptive_windows import HELPER

MODELCHECK = Path(sys.executable).with_name("modelcheck")

BEFORE = '''import torch.nn as nn
import torch.nn.functional as F


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(5)

    def forward(self, x):
        y = self.conv(x)
        return self.pool(y), F.adaptive_max_pool2d(y, (3, 4))
'''


def _helper() -> type:
    namespace: dict[str, object] = {"torch": torch}
    exec(HELPER.format(name="Windows"), namespace)  # the very code --fix inserts
    return namespace["Windows"]  # type: ignore[return-value]


@pytest.mark.parametrize("shape, size", [((1, 4, 33, 33), 5), ((2, 3, 17, 12), (3, None)), ((1, 2, 12, 12), 5),
                                         ((1, 2, 7, 9), (7, 4)), ((1, 3, 10), 3), ((1, 2, 5, 6, 7), (2, 4, 3))])
def test_the_windows_are_pytorchs_for_every_input(shape: tuple[int, ...], size: object) -> None:
    """The helper equals adaptive average pooling (to float rounding) and max pooling (bit for bit)."""
    x = torch.randn(*shape)
    dims = len(shape) - 2
    helper = _helper()
    avg = getattr(F, f"adaptive_avg_pool{dims}d")(x, size)
    torch.testing.assert_close(helper(size, "avg", dims)(x), avg, rtol=0, atol=1e-6)
    assert torch.equal(helper(size, "max", dims)(x), getattr(F, f"adaptive_max_pool{dims}d")(x, size))


def _modelcheck(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELCHECK), *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.caffe2
def test_fixed_model_exports_keeps_its_outputs_and_runs_in_caffe2(tmp_path: Path) -> None:
    require_caffe2()
    (tmp_path / "head.py").write_text(BEFORE)
    spec = ["head.py", "--model", "head.py:Head", "--input-shape", "1,3,33,33", "--format", "json"]
    before = json.loads(_modelcheck(tmp_path, *spec).stdout)
    export = next(s for s in before["stages"] if s["name"] == "export")
    assert export["status"] == "failed" and export["predicted_by"] == ["MC602"], export
    assert (tmp_path / "head.py").read_text() == BEFORE  # unsafe: --fix alone leaves it
    _modelcheck(tmp_path, *spec, "--fix")
    assert (tmp_path / "head.py").read_text() == BEFORE
    fixed = json.loads(_modelcheck(tmp_path, *spec, "--fix", "--unsafe-fixes").stdout)
    records = [r for r in fixed["fixes"] if r["code"] == "MC602"]
    assert len(records) == 2 and all(r["status"] == "applied" for r in records), records
    # the windows of 33×33 are baked in: measured at a second size, reported as a note (chosen), not a stage
    assert "second_size" not in {s["name"] for s in fixed["stages"]}
    (bound,) = [n for n in fixed["notes"] if "holds for the traced input size only" in n]
    assert "kept 2 fix(es)" in bound and "MC602 at head.py:" in bound, bound
    assert re.search(r"at a second size it (failed|mismatch): .*1×3×50×50", bound), bound
    text = (tmp_path / "head.py").read_text()
    assert "self.pool = _AdaptivePoolWindows(5, 'avg', 2)" in text
    assert "_AdaptivePoolWindows((3, 4), 'max', 2)(y)" in text and text.count("class _AdaptivePoolWindows") == 1
    after = json.loads(_modelcheck(tmp_path, *spec).stdout)
    assert {s["name"]: s["status"] for s in after["stages"]} == {
        "export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}, after["stages"]
    assert not [f for f in after["findings"] if f["code"] == "MC602"]
