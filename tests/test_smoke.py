"""The smoke test: real export, ONNX checker, ONNX Runtime and Caffe2 runs, compared with PyTorch.

What a user relies on: a model that survives shows ``passed`` everywhere with its artifacts on
disk; a model that does not is never ``passed`` (mismatch, failed, crashed or timeout, each
with the reason), a bad stage names the finding that predicted it or says loudly that none
did, and a model that kills or hangs its process becomes a stage result, not a crash.
docs/evidence.md's construct table is re-measured in ``test_evidence.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import caffe2_available, require_caffe2
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Severity
from modelcheck.models.specs import parse_spec
from modelcheck.smoke.run import artifact_name, artifacts_for, run_smoke
from modelcheck.smoke.stages import compare
from modelcheck.static.run import check_source
from modelcheck.targets import make_target

REPO = Path(__file__).resolve().parents[1]
MODELCHECK = [sys.executable, "-m", "modelcheck"]

CONV_NET = """\
import torch.nn as nn


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2, 2), nn.ConvTranspose2d(8, 4, 2, stride=2))

    def forward(self, x):
        return self.body(x)
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _smoke(path: Path, name: str, tmp_path: Path, target: str = "caffe2", opset: int | None = None,
           exporter: str | None = None, timeout: float = 120.0):
    the_target = make_target(target, opset, exporter)
    findings = check_source(str(path), path.read_text(), the_target, Config())
    spec = parse_spec(f"{path}:{name}", input_shape=(1, 3, 16, 16))
    return run_smoke(spec, the_target, Config(timeout=timeout), findings, tmp_path / "artifacts")


def _by_name(stages):
    return {stage.name: stage for stage in stages}


# ----------------------------------------------------------------------------- comparison


def test_compare_passes_within_tolerance_and_reports_the_differences() -> None:
    expected = [np.array([[1.0, 2.0], [3.0, 0.0]], dtype=np.float32)]
    got = [expected[0] + np.float32(5e-5)]
    status, max_abs, max_rel, detail = compare(got, expected, atol=1e-4, rtol=1e-3)
    assert status == "passed"
    assert max_abs == pytest.approx(5e-5, rel=1e-2)
    assert max_rel == pytest.approx(5e-5 / 3, rel=1e-2)  # relative to the output's scale, max |value| 3
    assert "1 output(s) 2×2 match PyTorch" in detail


def test_compare_mismatch_names_the_worst_element_and_both_values() -> None:
    expected = [np.zeros((1, 2, 3), dtype=np.float32)]
    got = [expected[0].copy()]
    got[0][0, 1, 2] = 0.5
    status, max_abs, _, detail = compare(got, expected, atol=1e-4, rtol=1e-3)
    assert status == "mismatch"
    assert max_abs == pytest.approx(0.5)
    assert "[0, 1, 2]" in detail and "got 0.5" in detail and "PyTorch 0" in detail
    assert "1 of 6 elements" in detail


def test_compare_shape_and_count_mismatches_report_both_sides() -> None:
    expected = [np.zeros((1, 4, 34, 34), dtype=np.float32)]
    status, _, _, detail = compare([np.zeros((1, 4, 32, 32), dtype=np.float32)], expected, 1e-4, 1e-3)
    assert status == "mismatch" and "shape 1×4×32×32, PyTorch 1×4×34×34" in detail
    status, _, _, detail = compare([], expected, 1e-4, 1e-3)
    assert status == "mismatch" and detail == "0 output(s), PyTorch has 1"


def test_compare_nan_only_where_pytorch_has_it() -> None:
    expected = [np.array([np.nan, 1.0], dtype=np.float32)]
    assert compare([expected[0].copy()], expected, 1e-4, 1e-3)[0] == "passed"
    got = [np.array([np.nan, np.nan], dtype=np.float32)]
    status, _, _, detail = compare(got, expected, 1e-4, 1e-3)
    assert status == "mismatch" and "NaN at 1 element(s)" in detail


def test_artifact_folders() -> None:
    assert artifact_name("src/nets.py:UNet") == "nets.UNet"
    assert artifact_name("zoo.models:resnext101") == "zoo.models.resnext101"
    assert artifacts_for("src/nets.py:UNet", None, many=False) == Path(".modelcheck/nets.UNet")
    assert artifacts_for("a.py:Net", Path("out"), many=False) == Path("out")
    assert artifacts_for("a.py:Net", Path("out"), many=True) == Path("out/a.Net")


# ----------------------------------------------------------------------------- real runs


@pytest.mark.slow
def test_a_plain_conv_net_passes_everywhere_and_leaves_its_artifacts(tmp_path: Path) -> None:
    path = _write(tmp_path, "convnet.py", CONV_NET)
    outcome = _smoke(path, "ConvNet", tmp_path)
    stages = _by_name(outcome.stages)
    assert list(stages) == ["export", "onnx_check", "onnxruntime", "caffe2"]
    assert stages["export"].status == "passed"
    assert stages["onnx_check"].status == "passed" and "Conv" in stages["onnx_check"].detail
    assert stages["onnxruntime"].status == "passed"
    assert stages["onnxruntime"].max_abs_diff is not None and stages["onnxruntime"].max_abs_diff < 1e-5
    art = tmp_path / "artifacts" / "caffe2"  # the target's own folder
    assert (art / "model.onnx").stat().st_size > 1000
    report = json.loads((art / "report.json").read_text())
    assert report["model"] == f"{path}:ConvNet" and report["target"] == "caffe2" and report["opset"] == 9
    assert [s["name"] for s in report["stages"]] == list(stages)
    assert set(report["stages"][0]) >= {"model", "name", "status", "seconds", "max_abs_diff", "max_rel_diff",
                                        "detail", "predicted_by"}
    assert not outcome.notes
    if caffe2_available():
        assert stages["caffe2"].status == "passed", stages["caffe2"].detail
        assert stages["caffe2"].max_abs_diff < 1e-5
        assert (art / "init_net.pb").stat().st_size > 1000 and (art / "predict_net.pb").stat().st_size > 100
        assert set(report["artifacts"]) >= {"model.onnx", "init_net.pb", "predict_net.pb"}
    else:
        assert stages["caffe2"].status == "skipped" and "not installed" in stages["caffe2"].detail


@pytest.mark.slow
def test_onnx_target_with_the_dynamo_exporter_reports_its_own_stages_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "convnet.py", CONV_NET)
    outcome = _smoke(path, "ConvNet", tmp_path, "onnx", 18, "dynamo")
    stages = _by_name(outcome.stages)
    assert stages["export"].status == "passed" and "dynamo exporter, opset 18" in stages["export"].detail
    assert stages["onnxruntime"].status == "passed"
    assert list(stages) == ["export", "onnx_check", "onnxruntime"]  # no caffe2 row: not this target's
    assert {stage.target for stage in outcome.stages} == {"onnx"}


@pytest.mark.slow
def test_a_forward_error_fails_the_export_and_is_flagged_unpredicted(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.py", """\
        import torch.nn as nn


        class Broken(nn.Module):
            def forward(self, x):
                return x.view(7, -1, 5)
        """)
    outcome = _smoke(path, "Broken", tmp_path)
    stages = _by_name(outcome.stages)
    assert stages["export"].status == "failed" and "RuntimeError" in stages["export"].detail
    assert stages["export"].predicted_by == ()
    assert all(stages[n].status == "skipped" and stages[n].detail == "export failed"
               for n in ("onnx_check", "onnxruntime", "caffe2"))
    assert any("export stage failed and no finding predicted it" in note for note in outcome.notes)


@pytest.mark.slow
def test_every_output_of_a_dict_returning_model_is_compared(tmp_path: Path) -> None:
    """Only the second output is wrong (bilinear at opset 9): the first one matching must not hide it."""
    path = _write(tmp_path, "heads.py", """\
        import torch.nn as nn
        import torch.nn.functional as F


        class Heads(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3, padding=1)

            def forward(self, x):
                y = self.conv(x)
                return {"features": y, "mask": F.interpolate(y, scale_factor=2, mode="bilinear")}
        """)
    outcome = _smoke(path, "Heads", tmp_path)
    ort = _by_name(outcome.stages)["onnxruntime"]
    assert ort.status == "mismatch" and ort.detail.startswith("output 1: max abs diff"), ort.detail
    assert ort.predicted_by == ("MC201",)


@pytest.mark.slow
def test_a_model_that_kills_its_process_is_a_crashed_stage(tmp_path: Path) -> None:
    path = _write(tmp_path, "aborts.py", """\
        import os

        import torch.nn as nn


        class Aborts(nn.Module):
            def forward(self, x):
                os.abort()
        """)
    stages = _by_name(_smoke(path, "Aborts", tmp_path).stages)
    assert stages["export"].status == "crashed" and "SIGABRT" in stages["export"].detail
    assert stages["caffe2"].status == "skipped" and stages["caffe2"].detail == "export crashed"


@pytest.mark.slow
def test_a_model_that_hangs_is_a_timeout_stage(tmp_path: Path) -> None:
    path = _write(tmp_path, "hangs.py", """\
        import time

        import torch.nn as nn


        class Hangs(nn.Module):
            def forward(self, x):
                time.sleep(3600)
        """)
    stages = _by_name(_smoke(path, "Hangs", tmp_path, timeout=4).stages)
    assert stages["export"].status == "timeout"
    assert stages["onnxruntime"].status == "skipped" and stages["onnxruntime"].detail == "export timeout"


@pytest.mark.slow
@pytest.mark.caffe2
def test_a_caffe2_segfault_is_a_crashed_stage_not_a_crash_of_modelcheck(tmp_path: Path) -> None:
    require_caffe2()
    # A genuine Caffe2 bug: an Upsample with negative scales (emitted by a custom symbolic)
    # makes a tensor with negative dimensions and fetching it segfaults.
    path = _write(tmp_path, "segv.py", """\
        import torch
        import torch.nn as nn


        class _Identity(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.clone()

            @staticmethod
            def symbolic(g, x):
                scales = g.op("Constant", value_t=torch.tensor([1.0, 1.0, -3.0, -3.0]))
                return g.op("Upsample", x, scales, mode_s="nearest")


        class Segv(nn.Module):
            def forward(self, x):
                return _Identity.apply(x)
        """)
    outcome = _smoke(path, "Segv", tmp_path)
    stages = _by_name(outcome.stages)
    assert stages["export"].status == "passed" and stages["onnx_check"].status == "passed"
    assert stages["caffe2"].status == "crashed" and "SIGSEGV" in stages["caffe2"].detail
    assert "Fatal Python error" in (tmp_path / "artifacts" / "caffe2" / "caffe2.log").read_text()  # the child's stack
    assert any("caffe2 stage crashed and no finding predicted it" in note for note in outcome.notes)


def test_predicted_by_uses_only_findings_about_this_model(tmp_path: Path) -> None:
    """A finding in another file never 'predicts' this model's failure (fast: no real run)."""
    from modelcheck.findings import StageResult
    from modelcheck.smoke.run import _with_prediction

    mine = str((tmp_path / "net.py").resolve())
    other = Finding("MC201", "bilinear", Severity.ERROR, Location(str(tmp_path / "other.py"), 3))
    here = Finding("MC201", "bilinear", Severity.ERROR, Location(mine, 12))
    stage = StageResult("net.py:Net", "caffe2", "mismatch", detail="output 0: max abs diff 0.9")
    assert _with_prediction(stage, None, None, "net.py:Net", [mine], [other]).predicted_by == ()
    predicted = _with_prediction(stage, None, None, "net.py:Net", [mine], [other, here])
    assert predicted.predicted_by == ("MC201",) and predicted.location == here.location
    assert predicted.detail.endswith(f"(at {mine}:12)")
    # MC301 at opset 9 is a warning about other input sizes: it does not predict a mismatch here
    ceil = Finding("MC301", "ceil_mode", Severity.WARNING, Location(mine, 5))
    assert _with_prediction(stage, None, None, "net.py:Net", [mine], [ceil]).predicted_by == ()
    # two models in one file: the line tracing saw in this model, not another model's earlier line
    traced = Finding("MC201", "bilinear", Severity.ERROR, Location(mine, 40), evidence="both", model="net.py:Net")
    assert _with_prediction(stage, None, None, "net.py:Net", [mine], [here, traced]).location == traced.location
    # ...and a static finding of another code elsewhere in the file does not join what tracing saw
    elsewhere = Finding("MC503", "nearest", Severity.ERROR, Location(mine, 60))
    both = _with_prediction(replace(stage, name="litert"), None, None, "net.py:Net", [mine],
                            [elsewhere, Finding("MC207", "bilinear", Severity.WARNING, Location(mine, 40),
                                                evidence="both", model="net.py:Net")], target="litert")
    assert both.predicted_by == ("MC207",) and both.location.line == 40
    # an exporter names the construct it refused: a finding about another construct does not predict it
    corners = Finding("MC202", "align_corners", Severity.ERROR, Location(mine, 30))
    refused = StageResult("net.py:Net", "export", "failed", detail="Unsupported: ONNX export of operator "
                          "adaptive_avg_pool2d, input size not accessible")
    assert _with_prediction(refused, "adaptive_avg_pool2d", None, "net.py:Net", [mine], [corners]).predicted_by == ()
    assert _with_prediction(refused, "upsample_bilinear2d", None, "net.py:Net", [mine],
                            [corners]).predicted_by == ("MC202",)
    passed = StageResult("net.py:Net", "caffe2", "passed")
    assert _with_prediction(passed, None, None, "net.py:Net", [mine], [here]).predicted_by == ()


# ----------------------------------------------------------------------------- the command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELCHECK, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_bundled_seed_example_end_to_end(tmp_path: Path) -> None:
    """The README's main command: static + trace + smoke on the seed's three problems."""
    result = _cli(str(REPO / "examples" / "seed_model.py"), "--format", "json",
                  "--artifacts", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    codes = {f["code"] for f in data["findings"]}
    assert {"MC101", "MC201", "MC301"} <= codes
    stages = {s["name"]: s for s in data["stages"]}
    # MaxPool2d(ceil_mode=True) at opset 9 is right for the traced size only (MC301): a second size is tried
    assert list(stages) == ["export", "onnx_check", "onnxruntime", "caffe2", "second_size"]
    assert stages["second_size"]["status"] == "failed" and stages["second_size"]["predicted_by"] == ["MC301"]
    for stage in data["stages"]:
        assert set(stage) >= {"model", "name", "status", "seconds", "max_abs_diff", "max_rel_diff",
                              "detail", "predicted_by"}
    # bilinear at opset 9: exports, then computes something else; never "passed"
    assert stages["export"]["status"] == "passed"
    assert stages["onnxruntime"]["status"] == "mismatch" and stages["onnxruntime"]["predicted_by"] == ["MC201"]
    assert stages["onnxruntime"]["max_abs_diff"] > 1e-3
    out = tmp_path / "out" / "caffe2"
    assert (out / "model.onnx").is_file() and (out / "report.json").is_file()
    if caffe2_available():
        assert stages["caffe2"]["status"] == "mismatch" and stages["caffe2"]["predicted_by"] == ["MC201"]
        assert (out / "init_net.pb").is_file() and (out / "predict_net.pb").is_file()
    else:
        assert stages["caffe2"]["status"] == "skipped"
    assert data["summary"]["stages"].get("passed", 0) == 2


@pytest.mark.slow
def test_no_smoke_runs_no_stage(tmp_path: Path) -> None:
    path = _write(tmp_path, "convnet.py", CONV_NET)
    result = _cli(str(path), "--no-smoke", "--format", "json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["stages"] == [] and not (tmp_path / ".modelcheck").exists()
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_doctor_lists_every_runtime_with_its_version(tmp_path: Path) -> None:
    result = _cli("--doctor", cwd=tmp_path)
    for name in ("torch", "onnx", "onnxruntime", "caffe2"):
        assert name in result.stdout
    import torch

    assert torch.__version__.split("+")[0] in result.stdout  # torch's version, read from the running runtime
    if caffe2_available():
        assert result.returncode == 0, result.stdout
        assert "all runtimes work" in result.stdout
    else:
        assert result.returncode == 1 and "modelcheck --install caffe2" in result.stdout

