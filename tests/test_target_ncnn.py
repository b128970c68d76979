"""The ``ncnn`` target: TorchScript → pnnx → ncnn, in an environment of its own, and MC302.

Fast tests: the profile is found and refuses ONNX settings; MC302 fires at ncnn only, where its
fixture says, and its two conditions agree with PyTorch's pooling arithmetic at every size; the
pnnx graph reader. Slow tests need the target's environment (``modelcheck --install ncnn``;
skipped without it, failed under ``MODELCHECK_REQUIRE_TARGETS=1``): the smoke test through the
CLI, the doctor check, the install's idempotence, and MC302's evidence measured on ncnn itself,
without modelcheck in between.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_target
from modelcheck.fixers.pooling import output_size
from modelcheck.rules.pooling import drops_somewhere, rounds_up_somewhere
from modelcheck.targets import PROFILES, STAGES, TARGET_NAMES, TargetError, get_profile, make_target, make_targets
from modelcheck.targets.ncnn import PARAM, TORCHSCRIPT, WEIGHTS, _last_error, output_shapes
from static_helpers import expected, findings_in, found
from target_helpers import assert_doctor_runs_the_one_conv_model, assert_install_is_idempotent

MODELCHECK = [sys.executable, "-m", "modelcheck"]
FIXTURES = Path(__file__).parent / "fixtures" / "targets"
CLEAN = FIXTURES / "ncnn_clean.py"
POOLS = FIXTURES / "ncnn_pools.py"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELCHECK, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def _line(model_line_text: str) -> int:
    """The fixture line holding ``model_line_text`` (a marker line of MC302)."""
    lines = POOLS.read_text().splitlines()
    return next(number for number, line in enumerate(lines, start=1) if model_line_text in line)


# ----- fast: the profile, the rule, the graph reader ----------------------------------------------


def test_the_profile_is_discovered_as_a_non_onnx_target_with_its_own_environment() -> None:
    profile = get_profile("ncnn")
    assert "ncnn" in TARGET_NAMES and PROFILES["ncnn"] is profile
    assert not profile.onnx and profile.export is not None and profile.run_file is not None
    assert profile.stage_names() == ("ncnn",) and "ncnn" in STAGES
    assert profile.env is not None and {"pnnx", "ncnn", "torch"} <= set(profile.env.requirements)
    assert {TORCHSCRIPT, PARAM, WEIGHTS} <= set(profile.artifacts)


def test_make_target_has_no_opset_and_refuses_one() -> None:
    target = make_target("ncnn")
    assert (target.opset, target.onnx) == (0, False)
    assert target.label == "ncnn (TorchScript + pnnx)"
    with pytest.raises(TargetError, match="does not export ONNX"):
        make_target("ncnn", opset=11)
    with pytest.raises(TargetError, match="apply to ONNX targets"):
        make_targets(["ncnn"], opset=11)


def test_mc302_fires_at_ncnn_where_the_fixture_says_and_nowhere_else() -> None:
    assert found(POOLS, "ncnn") == expected(POOLS)
    assert not [code for _, code, _ in found(POOLS, "caffe2@11") if code == "MC302"]
    assert found(POOLS, "onnx") == {}
    assert "MC301" in {code for _, code, _ in found(POOLS, "caffe2@11")}  # ceil_mode is Caffe2's MC301


#: from source, where the input size is not known, MC302 says "may": tracing settles it at the real size
MC302_STATIC = ("MC302", "warning")


def _fires_at(pool: str, size: int) -> bool:
    """Does MC302 fire on this pool at a traced input of ``size`` × ``size`` (as tracing sees it)?"""
    import dataclasses

    from modelcheck.rules import FAMILIES, RULES_BY_CODE
    from modelcheck.static.source import SourceFile

    family = next(f for f in FAMILIES if f.name == "pooling")
    [(_, facts)] = [pair for pair in family.extract(SourceFile.parse("p.py", f"import torch.nn as nn\np = {pool}\n"))
                    if "Pool" in pair[1].api]
    return RULES_BY_CODE["MC302"].match(dataclasses.replace(facts, input_size=(size, size))) is not None


def _codes(source: str) -> list[tuple[str, str]]:
    return [(f.code, f.severity.value) for f in findings_in("import torch.nn as nn\n" + source, "ncnn")]


def test_mc302_reads_count_include_pad_and_what_is_not_known() -> None:
    assert _codes("p = nn.AvgPool2d(2, ceil_mode=True)\n") == [MC302_STATIC]  # no padding: still off
    assert _codes("p = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)\n") == []
    assert _codes("p = nn.AvgPool2d(3, 1, 1, ceil_mode=True)\n") == []  # stride 1: nothing rounds up
    assert _codes("p = nn.MaxPool2d(3, 2, 1, ceil_mode=True)\n") == []  # max pools: only a dropped window
    assert _codes("p = nn.MaxPool2d(2, 2, 1, ceil_mode=True)\n") == [MC302_STATIC]
    assert _codes("p = nn.AvgPool2d(2, 2, 1, ceil_mode=True, count_include_pad=False)\n") == [MC302_STATIC]
    assert _codes("def f(c):\n    return nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=c)\n") == [
        ("MC302", "warning")]
    assert _codes("def f(k):\n    return nn.AvgPool2d(k, ceil_mode=True)\n") == [("MC302", "warning")]
    assert _codes("def f(k):\n    return nn.MaxPool2d(k, ceil_mode=True)\n") == []  # a max pool's "may" cries wolf


def test_mc302_conditions_are_pytorchs_pooling_arithmetic_at_some_size() -> None:
    """``rounds_up_somewhere``: ceil and floor mode differ for some input length; ``drops_somewhere``:
    PyTorch drops ceil mode's last window for some length (ATen's ``pooling_output_shape``)."""
    for k in range(1, 7):
        for s in range(1, 5):
            for p in range(0, k // 2 + 1):
                for d in (1, 2):
                    lengths = [n for n in range(1, 80) if n + 2 * p >= d * (k - 1) + 1]
                    rounds = any(output_size(n, k, s, p, d, True) != output_size(n, k, s, p, d, False)
                                 for n in lengths)
                    drops = any((-(-(n + 2 * p - d * (k - 1) - 1) // s)) * s >= n + p for n in lengths)
                    assert rounds_up_somewhere(k, s, p, d) == rounds, (k, s, p, d)
                    assert drops_somewhere(k, s, p, d) == drops, (k, s, p, d)


# pnnx's own graph of a model returning (feature map, logits), as pnnx 20261020 wrote it
_PNNX_GRAPH = """7767517
8 7
pnnx.Input               pnnx_input_0             0 1 0 #0=(2,3,16,16)f32
nn.Conv2d                features.0               1 1 0 1 bias=True #0=(2,3,16,16)f32 #1=(2,8,16,16)f32
nn.MaxPool2d             features.2               1 1 1 3 ceil_mode=False #1=(2,8,16,16)f32 #3=(2,8,8,8)f32
torch.mean               torch.mean_0             1 1 3 4 dim=(2,3) keepdim=False #3=(2,8,8,8)f32 #4=(2,8)f32
nn.Linear                head                     1 1 4 5 bias=True @weight=(5,8)f32 #4=(2,8)f32 #5=(2,5)f32
prim::TupleConstruct     pnnx_6                   2 1 3 5 6 #3=(2,8,8,8)f32 #5=(2,5)f32
pnnx.Output              pnnx_output_0            1 0 6
"""


def test_output_shapes_follow_a_tuple_to_its_outputs(tmp_path: Path) -> None:
    (tmp_path / "model.pnnx.param").write_text(_PNNX_GRAPH)
    assert output_shapes(tmp_path / "model.pnnx.param") == [(2, 8, 8, 8), (2, 5)]
    single = _PNNX_GRAPH.replace("prim::TupleConstruct", "#").replace("1 0 6", "1 0 5 #5=(2,5)f32")
    (tmp_path / "single.param").write_text(single)
    assert output_shapes(tmp_path / "single.param") == [(2, 5)]
    assert output_shapes(tmp_path / "missing.param") == []


def test_the_converters_error_line_is_the_one_reported() -> None:
    log = "pnnxparam = m.pnnx.param\n############# pass_level0\nterminate called after throwing\n" \
          "  what():  The following operation failed\nRuntimeError: Calling torch.linalg.lu_factor\n\n"
    assert _last_error(log) == "RuntimeError: Calling torch.linalg.lu_factor"
    assert _last_error("just a line\n") == "just a line"


# ----- slow: the real converter and runtime -------------------------------------------------------


def _smoke(model: str, shape: str, tmp_path: Path, fixture: Path = POOLS) -> tuple[int, dict]:
    out = tmp_path / "out"
    result = _cli(str(fixture), "--model", f"{fixture}:{model}", "--input-shape", shape, "--target", "ncnn",
                  "--format", "json", "--artifacts", str(out), cwd=tmp_path)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.slow
def test_a_clean_conv_relu_maxpool_model_exports_and_matches(tmp_path: Path) -> None:
    require_target("ncnn")
    code, data = _smoke("Net", "1,3,17,17", tmp_path, CLEAN)
    stages = {s["name"]: s for s in data["stages"]}
    assert list(stages) == ["export", "ncnn"], data["stages"]
    assert stages["export"]["status"] == "passed" and stages["ncnn"]["status"] == "passed", data["stages"]
    assert stages["ncnn"]["max_abs_diff"] < 1e-5
    folder = tmp_path / "out" / "ncnn"
    assert all((folder / name).stat().st_size > 0 for name in (TORCHSCRIPT, PARAM, WEIGHTS))
    assert "Pooling" in (folder / PARAM).read_text()
    assert code == 0 and not data["findings"]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "marker"), [
    ("CeilAvg", "nn.AvgPool2d(3, 2, 1, ceil_mode=True)"),
    ("FunctionalAvg", "F.avg_pool2d(self.conv(x), 3, 2, 1, ceil_mode=True)"),
])
def test_a_padded_average_is_a_mismatch_predicted_by_mc302_at_its_line(model: str, marker: str,
                                                                        tmp_path: Path) -> None:
    """A layer (module facts) and a functional call (traced call facts): both confirmed by the run."""
    require_target("ncnn")
    code, data = _smoke(model, "1,3,16,16", tmp_path)
    stage = next(s for s in data["stages"] if s["name"] == "ncnn")
    assert stage["status"] == "mismatch" and stage["max_abs_diff"] > 0.1, stage
    assert stage["predicted_by"] == ["MC302"] and stage["location"]["line"] == _line(marker)
    finding = next(f for f in data["findings"] if f["code"] == "MC302" and f["line"] == _line(marker))
    assert (finding["severity"], finding["evidence"]) == ("error", "both")
    assert code == 1


@pytest.mark.slow
def test_a_dropped_last_window_is_one_more_row_on_ncnn_predicted_by_mc302(tmp_path: Path) -> None:
    require_target("ncnn")
    code, data = _smoke("DropsWindow", "1,3,17,17", tmp_path)
    stage = next(s for s in data["stages"] if s["name"] == "ncnn")
    assert stage["status"] == "mismatch" and "shape 1×4×10×10, PyTorch 1×4×9×9" in stage["detail"], stage
    assert stage["predicted_by"] == ["MC302"]
    assert stage["location"]["line"] == _line("nn.MaxPool2d(2, 2, 1, ceil_mode=True)")
    assert code == 1


#: Runs in the ncnn environment, without modelcheck: one model per input size whose outputs are
#: each pool of the grid, converted as pnnx's documentation does (trace, ``pnnx model.pt
#: inputshape=...``, fp16 off), run by ncnn's Python binding in fp32, compared with PyTorch.
EVIDENCE = """
import json, subprocess, sys
import ncnn, numpy as np, pnnx, torch
import torch.nn as nn

folder, grid = sys.argv[1], json.loads(sys.argv[2])

def pool(kind, k, s, p, cip):
    if kind == "max":
        return nn.MaxPool2d(k, s, p, ceil_mode=True)
    if kind == "padded":  # MC302's rewrite of AvgPool2d(k, s, p, ceil_mode=True)
        return nn.Sequential(nn.ZeroPad2d(p), nn.AvgPool2d(k, s, ceil_mode=True, count_include_pad=False))
    return nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=cip)

class Grid(nn.Module):
    def __init__(self):
        super().__init__()
        self.pools = nn.ModuleList(pool(*config) for config in grid)
    def forward(self, x):
        return tuple(p(x) for p in self.pools)

found = {}
for size in (16, 17):
    torch.manual_seed(0)
    model, x = Grid().eval(), torch.rand(1, 2, size, size) + 0.5
    torch.jit.trace(model, (x,)).save(f"{folder}/grid{size}.pt")
    subprocess.run([pnnx.EXEC_PATH, f"grid{size}.pt", f"inputshape=[1,2,{size},{size}]f32", "fp16=0"],
                   cwd=folder, check=True, capture_output=True)
    net = ncnn.Net()
    for option in ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage"):
        setattr(net.opt, option, False)
    assert net.load_param(f"{folder}/grid{size}.ncnn.param") == 0
    assert net.load_model(f"{folder}/grid{size}.ncnn.bin") == 0
    extractor = net.create_extractor()
    extractor.input("in0", ncnn.Mat(x.numpy()[0]).clone())
    with torch.no_grad():
        wanted = model(x)
    for index, want in enumerate(wanted):
        got = np.array(extractor.extract(f"out{index}")[1].numpy())[None]
        want = want.numpy()
        found[f"{index}@{size}"] = ("shape" if got.shape != want.shape else
                                    "values" if np.abs(got - want).max() > 1e-5 else "ok")
    for index, config in enumerate(grid):  # the rewrite gives PyTorch's numbers of the pool it replaces
        if config[0] == "padded":
            original = nn.AvgPool2d(*config[1:4], ceil_mode=True)
            found[f"{index}@{size}:same_in_torch"] = all(
                torch.equal(original(t), model.pools[index](t)) for t in (torch.rand(1, 2, n, n) for n in range(8, 20)))
print(json.dumps(found))
"""

#: (kind, kernel, stride, padding, count_include_pad) → what ncnn gives at 16×16 and at 17×17
GRID = {
    ("avg", 3, 2, 1, True): ("values", "ok"),
    ("avg", 3, 2, 1, False): ("ok", "ok"),
    ("avg", 2, 2, 0, True): ("ok", "values"),
    ("avg", 2, 2, 0, False): ("ok", "ok"),
    ("avg", 2, 2, 1, False): ("ok", "shape"),
    ("max", 2, 2, 1, True): ("ok", "shape"),
    ("max", 3, 2, 1, True): ("ok", "ok"),
    ("padded", 3, 2, 1, False): ("ok", "ok"),
}


@pytest.mark.slow
def test_evidence_ncnn_counts_the_added_window_whole_and_keeps_a_dropped_one(tmp_path: Path) -> None:
    """MC302's evidence, re-measured on ncnn: a padded average is off where ceil_mode rounds up
    (16×16 for kernel 3 stride 2 padding 1, 17×17 for kernel 2 stride 2), counting no padding is
    right, a window PyTorch drops is an extra row; the rewrite matches on ncnn and equals the
    original in PyTorch. MC302 fires on each pool that ncnn got wrong at either size, and only there."""
    require_target("ncnn")
    from modelcheck.runtimes.envs import env_python

    python = env_python(get_profile("ncnn"))
    done = subprocess.run([str(python), "-c", EVIDENCE, str(tmp_path), json.dumps(list(GRID))],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert {config: (measured[f"{i}@16"], measured[f"{i}@17"]) for i, config in enumerate(GRID)} == GRID
    padded = list(GRID).index(("padded", 3, 2, 1, False))
    assert measured[f"{padded}@16:same_in_torch"] and measured[f"{padded}@17:same_in_torch"]
    for (kind, k, s, p, cip), outcomes in GRID.items():
        pool = (f"nn.MaxPool2d({k}, {s}, {p}, ceil_mode=True)" if kind == "max" else
                f"nn.Sequential(nn.ZeroPad2d({p}), nn.AvgPool2d({k}, {s}, ceil_mode=True, count_include_pad=False))"
                if kind == "padded" else f"nn.AvgPool2d({k}, {s}, {p}, ceil_mode=True, count_include_pad={cip})")
        assert (MC302_STATIC in _codes(f"p = {pool}\n")) == (outcomes != ("ok", "ok")), (pool, outcomes)
        padding = p if kind == "padded" else 0  # ZeroPad2d first: the pool sees the padded size
        assert (_fires_at(pool, 16 + 2 * padding), _fires_at(pool, 17 + 2 * padding)) == (
            outcomes[0] != "ok", outcomes[1] != "ok"), (pool, outcomes)


@pytest.mark.slow
def test_the_doctor_runs_the_one_conv_model_in_the_environment(tmp_path: Path) -> None:
    require_target("ncnn")
    assert_doctor_runs_the_one_conv_model("ncnn", "1.0.20261020", tmp_path)


@pytest.mark.slow
def test_install_is_idempotent(tmp_path: Path) -> None:
    require_target("ncnn")
    assert_install_is_idempotent("ncnn", "ncnn runtime ready: 1.0.20261020", tmp_path)
