"""MC2xx fixer: bilinear upsampling → _ExactBilinearUpsample, equal to F.interpolate, exportable at opset 9."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import require_caffe2
from hypothesis import given, settings
from hypothesis import strategies as st
from modelcheck.config import Config
from modelcheck.fix.run import make_plans
from modelcheck.fixers.base import Applicability, Edit, Exactness, FixContext
from modelcheck.fixers.upsampling import HELPER
from modelcheck.static.run import check_source
from modelcheck.targets import make_target

torch = pytest.importorskip("torch")
F = torch.nn.functional
FIXTURES = Path(__file__).parent / "fixtures" / "fixers"
MODELCHECK = Path(sys.executable).with_name("modelcheck")


def _helper_class():
    """The helper exactly as --fix inserts it, run as the user's file would run it."""
    namespace = {"torch": torch, "warnings": warnings}
    exec(compile(HELPER.format(name="Up"), "helper", "exec"), namespace)  # our own generated code
    return namespace["Up"]


Up = _helper_class()


def _close(got, expected) -> float:
    """Max abs difference, asserting it is within 1e-6 of the output's scale (the verify rule)."""
    assert got.shape == expected.shape
    diff = float((got - expected).abs().max()) if got.numel() else 0.0
    assert diff <= 1e-6 * max(1.0, float(expected.abs().max()) if got.numel() else 1.0), diff
    return diff


sizes = st.integers(1, 48)


@settings(max_examples=120, deadline=None)
@given(sizes, sizes, st.sampled_from([2, 4, 8, 2.0, (2, 4)]), st.integers(1, 3), st.integers(0, 2**16))
def test_power_of_two_factors_use_the_kernel_and_match_interpolate(height, width, factor, channels, seed):
    x = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(seed)) * 4
    module = Up(scale_factor=factor, align_corners=False)
    assert module.kernel is not None and not module.state_dict()  # kernel: a buffer outside the state_dict
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    _close(module(x), expected)


@settings(max_examples=120, deadline=None)
@given(sizes, sizes, st.sampled_from([2, 3, 4, 1.5, 2.5, (2, 3)]), st.booleans(), st.integers(0, 2**16))
def test_other_cases_use_pytorchs_weights_and_match_interpolate(height, width, factor, align, seed):
    x = torch.randn(1, 2, height, width, generator=torch.Generator().manual_seed(seed)) * 4
    module = Up(scale_factor=factor, align_corners=align)
    assert (module.kernel is None) == (align or factor in (3, 1.5, 2.5, (2, 3)))
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=align)
    _close(module(x), expected)


@settings(max_examples=60, deadline=None)
@given(sizes, sizes, st.integers(1, 96), st.integers(1, 96), st.booleans())
def test_sizes_match_interpolate(height, width, out_h, out_w, align):
    x = torch.randn(1, 3, height, width) * 4
    expected = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=align)
    _close(Up(size=(out_h, out_w), align_corners=align)(x), expected)


def test_renaming_the_deprecated_aliases_is_exact():
    x = torch.randn(1, 2, 5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(F.upsample(x, scale_factor=3, mode="bilinear", align_corners=False),
                           F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False))
        assert torch.equal(F.upsample_nearest(x, scale_factor=2), F.interpolate(x, scale_factor=2, mode="nearest"))
        assert torch.equal(F.upsample_bilinear(x, scale_factor=2),
                           F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


def _plans(path: Path, text: str, context: FixContext | None = None, *, unsafe: bool = True):
    path.write_text(text)
    context = context or FixContext("caffe2", 9)
    findings = check_source(str(path), text, make_target(context.target_name, context.opset), Config())
    return make_plans({str(path): text}, findings, context, unsafe=unsafe, verifiable=True)


def test_fixture_before_after_and_second_run(tmp_path):
    plans = _plans(tmp_path / "up.py", (FIXTURES / "upsampling_before.py").read_text())
    fixed = plans[0].fixed
    assert fixed == (FIXTURES / "upsampling_after.py").read_text()
    assert fixed.count("class _ExactBilinearUpsample(") == 1  # one helper per file
    safe, unsafe = Applicability.SAFE, Applicability.UNSAFE
    applicability = {(d.code, d.line): d.applicability for d in plans[0].decisions}
    assert applicability == {("MC201", 10): safe, ("MC202", 11): unsafe, ("MC205", 15): safe,
                             ("MC201", 15): safe, ("MC205", 16): safe}
    exactness = {(d.code, d.line): d.exactness for d in plans[0].decisions}
    assert exactness[("MC201", 10)] is Exactness.NUMERIC and exactness[("MC205", 15)] is Exactness.BY_CONSTRUCTION
    assert "modelcheck" not in "".join(line for line in fixed.splitlines() if line.startswith(("import", "from")))
    assert _plans(tmp_path / "up.py", fixed) == []  # nothing left to fix


def test_unsafe_rewrites_are_held_back_without_the_flag(tmp_path):
    plans = _plans(tmp_path / "up.py", (FIXTURES / "upsampling_before.py").read_text(), unsafe=False)
    held = [plans[0].held[id(d)] for d in plans[0].decisions if id(d) in plans[0].held]
    assert len(held) == 1 and "align_corners=True" in held[0] and "--unsafe-fixes" in held[0]
    assert "nn.UpsamplingBilinear2d(scale_factor=2)" in plans[0].fixed


def test_an_explicit_none_scale_factor_is_a_size_only_call(tmp_path):
    """``F.interpolate(x, size, None, "bilinear")`` (positional, R3Net style) is rewritten like ``size=...``."""
    code = ("import torch.nn.functional as F\n\n\n"
            "def up(x, y):\n    return F.interpolate(x, y.shape[2:], None, 'bilinear')\n")
    plans = _plans(tmp_path / "up.py", code)
    decisions = [d for d in plans[0].decisions if d.code == "MC201"]
    assert len(decisions) == 1 and isinstance(decisions[0], Edit), decisions
    assert "output size is given" in decisions[0].reason


def test_onnx_target_is_told_to_use_opset_11(tmp_path):
    plans = _plans(tmp_path / "up.py", (FIXTURES / "upsampling_before.py").read_text(), FixContext("onnx", 9))
    reasons = [d.reason for d in plans[0].decisions if d.code in ("MC201", "MC202")]
    assert reasons and all("--opset 11" in reason for reason in reasons)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _decoders():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = _load(FIXTURES / "upsampling_before.py", "mc_up_before").Decoder().eval()
        fixed = _load(FIXTURES / "upsampling_after.py", "mc_up_after").Decoder().eval()
    return original, fixed


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 24), st.integers(2, 24))
def test_fixed_fixture_keeps_weights_and_outputs(height, width):
    original, fixed = _decoders()
    fixed.load_state_dict(original.state_dict(), strict=True)
    assert list(fixed.state_dict()) == list(original.state_dict())
    x = torch.randn(1, 3, height, width)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _close(fixed(x), original(x))


def _export_and_run(model, x, path: Path):
    import numpy as np
    import onnx
    import onnxruntime

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=9, keep_initializers_as_inputs=True,
                          input_names=["x"], output_names=["y"])
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x).numpy()
    return float(np.abs(session.run(None, {"x": x.numpy()})[0] - expected).max())


@pytest.mark.slow
def test_fixed_upsampling_exports_at_opset_9_and_matches_in_onnxruntime(tmp_path):
    original, fixed = _decoders()
    fixed.load_state_dict(original.state_dict(), strict=True)
    x = torch.randn(1, 3, 9, 11)
    with pytest.raises(Exception, match="align_corners == True"):
        _export_and_run(original, x, tmp_path / "original.onnx")
    assert _export_and_run(fixed, x, tmp_path / "fixed.onnx") <= 1e-5
    plain = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    assert _export_and_run(plain, x, tmp_path / "plain.onnx") > 0.1  # the silent opset-9 divergence
    helper = torch.nn.Sequential(Up(scale_factor=2, align_corners=False))
    assert _export_and_run(helper, x, tmp_path / "helper.onnx") <= 1e-5


UPSAMPLER = '''import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.up_corners = nn.UpsamplingBilinear2d(scale_factor=2)

    def forward(self, x):
        x = self.conv(x)
        return self.up(x) + self.up_corners(x)
'''


def _run(folder: Path, *args: str) -> dict:
    result = subprocess.run([str(MODELCHECK), "net.py", "--model", "net.py:Net", "--input-shape", "1,3,17,13",
                             "--format", "json", *args], cwd=folder, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.caffe2
def test_fixed_upsampler_passes_caffe2_where_the_original_fails(tmp_path):
    require_caffe2()
    net = tmp_path / "net.py"
    net.write_text(UPSAMPLER)
    before = {s["name"]: s for s in _run(tmp_path)["stages"]}
    assert before["export"]["status"] == "failed"  # align_corners=True at opset 9

    safe_only = _run(tmp_path, "--fix")
    statuses = {(f["code"], f["line"]): f["status"] for f in safe_only["fixes"]}
    assert statuses == {("MC201", 8): "applied", ("MC202", 9): "held_back"}
    assert any("1 unsafe fix(es) held back" in note and "--unsafe-fixes" in note for note in safe_only["notes"])

    report = _run(tmp_path, "--fix", "--unsafe-fixes")
    stages = {s["name"]: s for s in report["stages"]}
    assert [f["status"] for f in report["fixes"]] == ["applied"] and report["fixes"][0]["verified"]
    assert stages["caffe2"]["status"] == "passed" and stages["caffe2"]["max_abs_diff"] <= 1e-5
    assert stages["onnxruntime"]["status"] == "passed" and stages["onnxruntime"]["max_abs_diff"] <= 1e-5
    # the kept unsafe fix holds PyTorch's weights for 17×13: measured at a second size, said in a note
    assert "second_size" not in stages
    assert any("holds for the traced input size only" in note and "MC202 at net.py:" in note
               and "at a second size it" in note and "at a second size it passed" not in note
               for note in report["notes"]), report["notes"]
    fixed = net.read_text()
    again = _run(tmp_path, "--fix", "--unsafe-fixes", "--no-smoke")
    assert net.read_text() == fixed and not again["fixes"]
