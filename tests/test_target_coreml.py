"""The ``coreml`` target: coremltools 9.0 converts the traced model to an ML program; nothing predicts here.

Fast tests: the profile is found, refuses ONNX settings and has no runner; MC207 fires at
coreml. Slow tests need the target's environment (``modelcheck --install coreml``; skipped
without it, failed under ``MODELCHECK_REQUIRE_TARGETS=1``): the smoke test through the CLI
(conversion passes and the ``coreml`` stage says why it did not run; a fractional bilinear
resize fails the conversion, predicted by MC207 at its line), the converter's behaviour on the
fixture's controls measured with coremltools alone, and the doctor check.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_target
from modelcheck.targets import PROFILES, STAGES, TARGET_NAMES, TargetError, get_profile, make_target
from modelcheck.targets.coreml import NEEDS_MACOS, NO_PREDICTION, PACKAGE
from static_helpers import expected, found

MODELCHECK = [sys.executable, "-m", "modelcheck"]
FIXTURES = Path(__file__).parent / "fixtures" / "targets"
CLEAN = FIXTURES / "coreml_clean.py"
FRACTIONAL = FIXTURES / "fractional_bilinear.py"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELCHECK, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


# ----- fast: the profile and the rules ------------------------------------------------------------


def test_the_profile_is_a_convert_only_target_with_its_own_environment() -> None:
    profile = get_profile("coreml")
    assert "coreml" in TARGET_NAMES and PROFILES["coreml"] is profile
    assert not profile.onnx and profile.export is not None and profile.run_file is None
    assert profile.stage_names() == ("coreml",) and "coreml" in STAGES
    assert not profile.stages[0].needs_reference  # it compares nothing, so it never waits for PyTorch
    assert profile.env is not None and {"torch", "coremltools"} <= set(profile.env.requirements)
    assert profile.env.version_of == "coremltools" and profile.install is not None


def test_make_target_has_no_opset_and_refuses_one() -> None:
    target = make_target("coreml")
    assert (target.opset, target.onnx, target.exporter) == (0, False, "torch.jit.trace")
    assert target.label == "coreml (torch.jit.trace + coremltools mlprogram)"
    with pytest.raises(TargetError, match="does not export ONNX"):
        make_target("coreml", opset=11)


def test_mc207_fires_at_coreml_at_the_fixtures_line() -> None:
    assert found(FRACTIONAL, "coreml") == expected(FRACTIONAL)
    assert not found(CLEAN, "coreml")


# ----- slow: the real converter -------------------------------------------------------------------


def _smoke(fixture: Path, model: str, shape: str, out: Path) -> tuple[int, dict]:
    result = _cli(str(fixture), "--model", f"{fixture}:{model}", "--input-shape", shape, "--target", "coreml",
                  "--format", "json", "--artifacts", str(out), cwd=out.parent)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
def test_a_clean_model_converts_and_the_coreml_stage_says_why_it_did_not_run(tmp_path: Path) -> None:
    require_target("coreml")
    code, data = _smoke(CLEAN, "Net", "1,3,17,17", tmp_path / "out")
    stages = {s["name"]: s for s in data["stages"]}
    assert list(stages) == ["export", "coreml"], data["stages"]
    assert stages["export"]["status"] == "passed" and stages["export"]["target"] == "coreml", data["stages"]
    assert (stages["coreml"]["status"], stages["coreml"]["detail"]) == ("skipped", NEEDS_MACOS)
    package = tmp_path / "out" / "coreml" / PACKAGE
    assert (package / "Manifest.json").is_file()  # an ML program package: a folder with its manifest
    assert code == 0 and not data["findings"]


@pytest.mark.slow
def test_a_fractional_bilinear_resize_fails_the_conversion_predicted_by_mc207(tmp_path: Path) -> None:
    """From 16×16 (24×24 out) it converts; from 17×17 (25.5) coremltools raises, naming the op, and
    the package of the run before is gone."""
    require_target("coreml")
    out = tmp_path / "out"
    _, data = _smoke(FRACTIONAL, "Net", "1,3,16,16", out)
    assert data["stages"][0]["status"] == "passed", data["stages"]
    assert (out / "coreml" / PACKAGE).is_dir()
    code, data = _smoke(FRACTIONAL, "Net", "1,3,17,17", out)
    export = data["stages"][0]
    assert export["name"] == "export" and export["status"] == "failed", data["stages"]
    assert export["detail"].startswith("NotImplementedError: recompute_scale_factor = False, align_corners = False "
                                       "with float output size is not supported")
    assert "(converting aten::upsample_bilinear2d)" in export["detail"]
    assert export["predicted_by"] == ["MC207"]
    assert export["location"]["line"] == next(line for (line, rule, _) in expected(FRACTIONAL) if rule == "MC207")
    assert data["stages"][1]["status"] == "skipped"
    assert not (out / "coreml" / PACKAGE).exists()
    assert code == 1


#: Runs in the coreml environment: each fixture model traced and converted as coremltools documents
#: it, at each input size; no modelcheck code involved.
EVIDENCE = """
import importlib.util, json, sys, warnings
warnings.simplefilter("ignore")
import coremltools as ct
import torch

spec = importlib.util.spec_from_file_location("fixture", sys.argv[1])
fixture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fixture)
found = {}
for name in sys.argv[2:]:
    for size in (16, 17):
        x = torch.randn(1, 3, size, size)
        traced = torch.jit.trace(getattr(fixture, name)().eval(), (x,))
        try:
            ct.convert(traced, inputs=[ct.TensorType(shape=x.shape)], convert_to="mlprogram")
            found[f"{name}@{size}"] = "converts"
        except Exception as exc:
            found[f"{name}@{size}"] = type(exc).__name__
print(json.dumps(found))
"""


@pytest.mark.slow
def test_evidence_coremltools_refuses_a_fractional_output_size_only(tmp_path: Path) -> None:
    """MC207 at coreml, re-measured on coremltools alone: bilinear by 1.5 fails exactly when size × 1.5
    is fractional; align_corners=True and nearest convert at both sizes; recompute_scale_factor=True
    (no MC207: it is exact in XNNPACK) fails at both, on the traced size arithmetic."""
    require_target("coreml")
    from modelcheck.runtimes.envs import env_python

    python = env_python(get_profile("coreml"))
    done = subprocess.run([str(python), "-c", EVIDENCE, str(FRACTIONAL), "Net", "CornersNet", "NearestNet",
                           "RecomputedNet"], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "Net@16": "converts", "Net@17": "NotImplementedError",
        "CornersNet@16": "converts", "CornersNet@17": "converts",
        "NearestNet@16": "converts", "NearestNet@17": "converts",
        "RecomputedNet@16": "TypeError", "RecomputedNet@17": "TypeError",
    }


@pytest.mark.slow
def test_the_doctor_converts_and_says_prediction_needs_macos(tmp_path: Path) -> None:
    require_target("coreml")
    run = get_profile("coreml").doctor(tmp_path / "conv.onnx", {}, 600.0)
    assert run.outputs is None and run.version == "9.0"
    assert run.detail.startswith(f"converts the one-conv model to {PACKAGE} (torch 2.13.0")
    assert run.detail.endswith(f"; not run: {NO_PREDICTION}")
    assert (tmp_path / "coreml" / PACKAGE / "Manifest.json").is_file()
