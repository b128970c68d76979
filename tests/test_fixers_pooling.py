"""MC301 fixer: ceil_mode=True pooling → -inf padding + ceil_mode=False, bit-identical."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_caffe2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from modelcheck.config import Config
from modelcheck.fix.run import make_plans
from modelcheck.fixers.base import Applicability, Exactness, FixContext
from modelcheck.fixers.pooling import always_exact, extra_padding, never_matters, output_size
from modelcheck.static.run import check_source
from modelcheck.targets import make_target

torch = pytest.importorskip("torch")
F = torch.nn.functional
FIXTURES = Path(__file__).parent / "fixtures" / "fixers"
MODELCHECK = Path(sys.executable).with_name("modelcheck")

pool_config = st.tuples(
    st.integers(1, 6),  # kernel
    st.integers(1, 6),  # stride
    st.integers(0, 3),  # padding (kept <= kernel // 2 below, as PyTorch requires)
    st.integers(1, 3),  # dilation
)


def _valid(length: int, k: int, s: int, p: int, d: int) -> bool:
    return p <= k // 2 and length + 2 * p - d * (k - 1) - 1 >= 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.integers(1, 2), st.lists(st.integers(1, 40), min_size=2, max_size=2), pool_config, st.integers(0, 2**16))
def test_padding_for_the_size_reproduces_ceil_mode_bit_for_bit(dims, lengths, config, seed):
    k, s, p, d = config
    lengths = lengths[:dims]
    assume(all(_valid(length, k, s, p, d) for length in lengths))
    x = torch.randn(2, 3, *lengths, generator=torch.Generator().manual_seed(seed))
    pool = F.max_pool1d if dims == 1 else F.max_pool2d
    expected = pool(x, k, s, p, d, ceil_mode=True)
    assert list(expected.shape[2:]) == [output_size(n, k, s, p, d, True) for n in lengths]
    assert list(pool(x, k, s, p, d).shape[2:]) == [output_size(n, k, s, p, d, False) for n in lengths]
    pads = [v for n in reversed(lengths) for v in (0, extra_padding(n, k, s, p, d))]
    got = pool(F.pad(x, pads, value=float("-inf")), k, s, p, d, ceil_mode=False)
    assert torch.equal(got, expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pool_config)
def test_the_safe_condition_is_exactly_when_one_padding_fits_every_size(config):
    """``always_exact`` is right both ways: s - 1 works for every length iff it says so."""
    k, s, p, d = config
    assume(p <= k // 2)
    lengths = [n for n in range(1, 80) if _valid(n, k, s, p, d)]
    x = torch.randn(1, 1, 80)
    fits = [torch.equal(F.max_pool1d(F.pad(x[..., :n], (0, s - 1), value=float("-inf")), k, s, p, d),
                        F.max_pool1d(x[..., :n], k, s, p, d, ceil_mode=True)) for n in lengths]
    assert all(fits) == always_exact(k, s, p, d)


def _plans(path: Path, text: str, context: FixContext | None = None, *, unsafe: bool = True):
    path.write_text(text)
    target = make_target("caffe2", context.opset if context else 9)
    findings = check_source(str(path), text, target, Config())
    return make_plans({str(path): text}, findings, context or FixContext("caffe2", 9), unsafe=unsafe,
                      verifiable=True)


def test_fixture_before_after(tmp_path):
    plans = _plans(tmp_path / "pool.py", (FIXTURES / "pooling_before.py").read_text())
    assert plans[0].fixed == (FIXTURES / "pooling_after.py").read_text()
    declined = [d for d in plans[0].decisions if type(d).__name__ == "Decline"]
    assert [d.line for d in declined] == [13] and "average pooling" in declined[0].reason


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 48), st.integers(3, 48))
def test_fixed_fixture_is_bit_identical_at_every_size(height, width):
    original = _load(FIXTURES / "pooling_before.py", "mc_pool_before").Net().eval()
    fixed = _load(FIXTURES / "pooling_after.py", "mc_pool_after").Net().eval()
    fixed.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(1, 3, height, width)
    with torch.no_grad():
        assert torch.equal(fixed(x), original(x))


def _source(line: str) -> str:
    return ("import torch.nn as nn\nimport torch.nn.functional as F\n\n"
            "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            f"        {line}\n")


def test_size_dependent_padding_uses_the_sizes_seen_and_is_unsafe(tmp_path):
    path = tmp_path / "sized.py"
    text = _source("self.pool = nn.MaxPool2d(2, 3, ceil_mode=True)")
    assert not always_exact(2, 3, 0, 1) and not never_matters(2, 3, 0, 1)
    plans = _plans(path, text)
    assert plans[0].fixed == text and "depends on the input size" in plans[0].decisions[0].reason
    width = next(n for n in range(4, 60) if extra_padding(n, 2, 3, 0, 1) not in (0, 2))
    height = 30
    pads = (0, extra_padding(width, 2, 3, 0, 1), 0, extra_padding(height, 2, 3, 0, 1))
    seen = {(os.path.realpath(path), 7): [(1, 8, height, width)]}
    plans = _plans(path, text, FixContext("caffe2", 9, call_shapes=seen))
    edit = plans[0].decisions[0]
    assert edit.applicability is Applicability.UNSAFE and f"1×8×{height}×{width}" in edit.reason
    assert edit.exactness is Exactness.BITWISE  # exact for the sizes seen only: a model must confirm it
    assert f'nn.ConstantPad2d({pads}, float("-inf"))' in plans[0].fixed
    held = _plans(path, text, FixContext("caffe2", 9, call_shapes=seen), unsafe=False)
    assert held[0].fixed == text and "--unsafe-fixes" in held[0].held[id(held[0].decisions[0])]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pool_config)
def test_the_flag_never_matters_exactly_when_said(config):
    k, s, p, d = config
    assume(p <= k // 2)
    lengths = [n for n in range(1, 80) if _valid(n, k, s, p, d)]
    assume(lengths)
    same = all(output_size(n, k, s, p, d, True) == output_size(n, k, s, p, d, False) for n in lengths)
    assert same == never_matters(k, s, p, d)


@pytest.mark.parametrize(("line", "why"), [
    ("self.pool = nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True)", "indices"),
    ("self.pool = nn.MaxPool2d(k, 2, ceil_mode=True)", "literal"),
    ("self.pool = nn.AvgPool2d(3, 2, ceil_mode=True)", "average pooling"),
])
def test_inexact_rewrites_are_declined(tmp_path, line, why):
    plans = _plans(tmp_path / "declined.py", _source(line))
    assert plans[0].fixed == _source(line)
    assert why in plans[0].decisions[0].reason


def test_caffe2_at_opset_11_is_declined_with_the_opset_to_use(tmp_path):
    plans = _plans(tmp_path / "o11.py", _source("self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)"),
                   FixContext("caffe2", 11))
    assert "opset 9" in plans[0].decisions[0].reason


SEED_POOL = '''import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x):
        return self.pool(self.conv(x))
'''


def _run(folder: Path, *args: str) -> dict:
    result = subprocess.run([str(MODELCHECK), "pool.py", "--model", "pool.py:Net", "--input-shape", "1,3,33,33",
                             "--format", "json", *args], cwd=folder, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.caffe2
def test_fixed_pool_passes_caffe2_where_the_original_diverges(tmp_path):
    require_caffe2()
    (tmp_path / "pool.py").write_text(SEED_POOL)
    before = {s["name"]: s for s in _run(tmp_path, "--opset", "10")["stages"]}
    assert before["caffe2"]["status"] == "mismatch"  # 16×16 instead of 17×17, no error
    report = _run(tmp_path, "--opset", "10", "--fix")
    after = {s["name"]: s for s in report["stages"]}
    assert after["caffe2"]["status"] == "passed" and after["caffe2"]["max_abs_diff"] <= 1e-5
    assert [f["status"] for f in report["fixes"]] == ["applied"] and report["fixes"][0]["verified"]
    fixed = (tmp_path / "pool.py").read_text()
    assert 'nn.ConstantPad2d((0, 1, 0, 1), float("-inf"))' in fixed
    shutil.copy(tmp_path / "pool.py", tmp_path / "once.py")
    again = _run(tmp_path, "--opset", "10", "--fix", "--no-smoke")
    assert (tmp_path / "pool.py").read_text() == fixed and not again["fixes"]
