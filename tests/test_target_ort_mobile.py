"""The ``ort-mobile`` target: ONNX → ORT format, run from the ``.ort`` file, judged by the usability checker.

Fast tests: the profile is found, its defaults, its place among several targets. Slow tests run
ONNX Runtime's own tools (they ship with the ``onnxruntime`` wheel, so nothing is skipped): the
smoke test through the CLI on a clean model and on upsampling models, what the usability
checker says about ONNX ``Resize`` at each opset, the ORT file's numbers at opset 9 (where the
exported bilinear ``Upsample`` is wrong), and the doctor check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from modelcheck.targets import PROFILES, STAGES, TARGET_NAMES, Target, get_profile, make_target, make_targets
from modelcheck.targets.ort_mobile import OPS_CONFIG, ORT_FILE, Usability, check_usability, convert
from static_helpers import found

MODELCHECK = [sys.executable, "-m", "modelcheck"]
FIXTURES = Path(__file__).parent / "fixtures" / "targets"
CLEAN = FIXTURES / "ort_mobile_clean.py"
RESIZE = FIXTURES / "ort_mobile_resize.py"
SHAPE = "1,3,17,17"
STAGE_NAMES = ("onnx_check", "ort_format", "ort_mobile", "mobile_usability")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELCHECK, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


# ----- fast: the profile ---------------------------------------------------------------------------


def test_the_profile_is_discovered_as_an_onnx_target_with_its_stages() -> None:
    profile = get_profile("ort-mobile")
    assert "ort-mobile" in TARGET_NAMES and PROFILES["ort-mobile"] is profile
    assert profile.onnx and profile.env is None and profile.install is None  # onnxruntime is already here
    assert profile.stage_names() == STAGE_NAMES and set(STAGE_NAMES) <= set(STAGES)
    assert {ORT_FILE, OPS_CONFIG} <= set(profile.artifacts)
    by_name = {stage.name: stage for stage in profile.stages}
    assert not by_name["ort_format"].needs_reference and not by_name["mobile_usability"].needs_reference
    assert by_name["ort_mobile"].after == ("ort_format",)


def test_make_target_defaults_to_opset_17_and_takes_both_exporters() -> None:
    assert make_target("ort-mobile") == Target("ort-mobile", 17, "torchscript")
    assert make_target("ort-mobile", exporter="dynamo") == Target("ort-mobile", 18, "dynamo")
    assert make_target("ort-mobile", 11).label == "ort-mobile (opset 11, torchscript exporter)"


def test_every_target_has_its_own_runtime_name() -> None:
    """The doctor keys its rows by runtime: ort-mobile must not share ``onnxruntime`` with ``onnx``."""
    runtimes = [profile.runtime for profile in PROFILES.values()]
    assert len(set(runtimes)) == len(runtimes), runtimes


def test_several_targets_each_keep_their_own_defaults() -> None:
    both = make_targets(["caffe2", "ort-mobile"])
    assert both.names == ("caffe2", "ort-mobile")
    assert [(t.opset, t.exporter) for t in both.members] == [(9, "torchscript"), (17, "torchscript")]
    assert both.label == "caffe2 (opset 9, torchscript exporter), ort-mobile (opset 17, torchscript exporter)"
    pinned = make_targets(["caffe2,ort-mobile"], opset=11)  # --opset goes to every ONNX target
    assert [t.opset for t in pinned.members] == [11, 11]


def test_the_resize_fixture_has_no_finding_at_ort_mobile_opset_17_but_has_at_9() -> None:
    """The shape-sized and bilinear resizes are opset-9 problems (MC203, MC201); at the target's default
    opset no rule fires."""
    assert found(RESIZE, "ort-mobile") == {}
    assert {code for _, code, _ in found(RESIZE, "ort-mobile@9")} == {"MC201", "MC203"}


def test_the_usability_line_names_the_verdict_and_each_ep() -> None:
    line = Usability(False, {"NNAPI": "NO", "CoreML MLProgram": "MAYBE"}, ["ops no NNAPI/Core ML EP takes: x"]).text()
    assert line == ("the checker says: use the CPU EP (NNAPI NO, CoreML MLProgram MAYBE); "
                    "ops no NNAPI/Core ML EP takes: x")


# ----- slow: ONNX Runtime's tools ------------------------------------------------------------------


def _smoke(fixture: Path, model: str, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    result = _cli(str(fixture), "--model", f"{fixture}:{model}", "--input-shape", SHAPE, "--target", "ort-mobile",
                  "--format", "json", "--artifacts", str(tmp_path / "out"), *extra, cwd=tmp_path)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
def test_a_clean_model_passes_every_stage_and_leaves_the_ort_file(tmp_path: Path) -> None:
    code, data = _smoke(CLEAN, "Net", tmp_path)
    stages = {s["name"]: s for s in data["stages"]}
    assert list(stages) == ["export", *STAGE_NAMES], data["stages"]
    assert all(s["status"] == "passed" and s["target"] == "ort-mobile" for s in stages.values()), data["stages"]
    assert stages["ort_mobile"]["max_abs_diff"] <= 1e-5
    assert stages["mobile_usability"]["detail"] == ("the checker says: NNAPI or Core ML EP worth trying "
                                                    "(NNAPI YES, CoreML NeuralNetwork YES, CoreML MLProgram YES)")
    folder = tmp_path / "out" / "ort-mobile"
    assert (folder / ORT_FILE).stat().st_size > 0
    assert "ai.onnx;" in (folder / OPS_CONFIG).read_text()  # the reduced build's operator list
    assert {ORT_FILE, OPS_CONFIG} <= set(json.loads((folder / "report.json").read_text())["artifacts"])
    assert code == 0 and not data["findings"]


@pytest.mark.slow
def test_a_shape_sized_resize_runs_and_gets_the_checkers_dynamic_shape_warning(tmp_path: Path) -> None:
    """The warning is advice, not a failure: the stage passes with the checker's words, ORT matches."""
    code, data = _smoke(RESIZE, "ShapeSized", tmp_path)
    stages = {s["name"]: s for s in data["stages"]}
    assert all(s["status"] == "passed" for s in stages.values()), data["stages"]
    assert stages["mobile_usability"]["detail"] == (
        "the checker says: NNAPI or Core ML EP worth trying (NNAPI MAYBE, CoreML NeuralNetwork MAYBE, "
        "CoreML MLProgram MAYBE); 1 node with an input of dynamic (unknown) shape")
    assert stages["ort_mobile"]["max_abs_diff"] == 0.0
    assert code == 0


def _export(model: str, opset: int, path: Path) -> Path:
    """A fixture's model exported as the target exports it (TorchScript, constants folded)."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("ort_mobile_resize", RESIZE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(getattr(module, model)().eval(), (torch.randn(1, 3, 17, 17),), str(path), dynamo=False,
                          opset_version=opset, input_names=["input"], do_constant_folding=True)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ShapeSized", "Scaled"])
def test_the_checker_counts_an_empty_resize_input_as_a_dynamic_shape(tmp_path: Path, model: str) -> None:
    """Not the shape-derived size: a constant scale factor gets the same "MAYBE" from opset 13 on,
    where the exporter leaves Resize's ``roi`` input empty; at opset 11 (``roi`` a constant) both are YES."""
    import onnx

    for opset, rating, dynamic in ((11, "YES", False), (13, "MAYBE", True), (17, "MAYBE", True)):
        path = _export(model, opset, tmp_path / f"{model}_{opset}.onnx")
        resize = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize")
        assert ("" in resize.input) == dynamic, (opset, list(resize.input))
        said = check_usability(path)
        assert set(said.ratings.values()) == {rating}, (opset, said)
        assert ("1 node with an input of dynamic (unknown) shape" in said.reasons) == dynamic, (opset, said)


@pytest.mark.slow
def test_the_ort_file_keeps_what_the_onnx_file_computes_at_opset_9(tmp_path: Path) -> None:
    """Bilinear ``Upsample`` at opset 9 is wrong in ONNX Runtime (MC201's evidence); converting to the
    ORT format does not change that: the ``ort_mobile`` stage is a mismatch of the same size."""
    _, data = _smoke(RESIZE, "Bilinear", tmp_path, "--opset", "9")
    stages = {s["name"]: s for s in data["stages"]}
    assert stages["ort_format"]["status"] == "passed", data["stages"]
    assert stages["ort_mobile"]["status"] == "mismatch" and stages["ort_mobile"]["max_abs_diff"] > 0.1
    assert "ai.onnx:Upsample" in stages["mobile_usability"]["detail"]


@pytest.mark.slow
def test_onnx_and_ort_mobile_in_one_run_each_report_their_stages(tmp_path: Path) -> None:
    result = _cli(str(CLEAN), "--model", f"{CLEAN}:Net", "--input-shape", SHAPE, "--target", "onnx,ort-mobile",
                  "--format", "json", "--artifacts", str(tmp_path / "out"), cwd=tmp_path)
    data = json.loads(result.stdout)
    ran = {(s["target"], s["name"]): s["status"] for s in data["stages"] if s["status"] != "skipped"}
    assert ran == {**{("onnx", n): "passed" for n in ("export", "onnx_check", "onnxruntime")},
                   **{("ort-mobile", n): "passed" for n in ("export", *STAGE_NAMES)}}, data["stages"]
    assert (tmp_path / "out" / "ort-mobile" / ORT_FILE).exists() and not (tmp_path / "out" / "onnx" / ORT_FILE).exists()
    assert result.returncode == 0


@pytest.mark.slow
def test_the_doctor_converts_and_runs_the_one_conv_model(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime
    import torch

    torch.manual_seed(0)  # the doctor's model, exported as the doctor exports it (opset 9, initializers as inputs)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=9, keep_initializers_as_inputs=True,
                          input_names=["input"])
    run = get_profile("ort-mobile").doctor(path, {"input": x.numpy()}, 60.0)
    assert run.version == onnxruntime.__version__ and run.detail.startswith("converted to the ORT format in")
    with torch.no_grad():
        assert np.abs(np.asarray(run.outputs[0]) - model(x).numpy()).max() < 1e-5
    assert convert(path, tmp_path).name == ORT_FILE  # the converter's own file name does not leak out
