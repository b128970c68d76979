"""Several inputs and non-tensor forward arguments, end to end.

``--input-shape "1,3,64,64;1,1,64,64"`` feeds one tensor per shape; ``--inputs module:fn`` takes the
example inputs from the user's own code; forward arguments that are not tensors (``mode="test"``)
come from ``ModelSpec.forward_kwargs`` or their defaults and are baked into the export as
constants. Every stage (trace, export, ONNX Runtime, Caffe2, fix verification) runs with all of
them; a forward that needs more inputs than given says so, marked ``needs_inputs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import require_caffe2
from modelcheck.cli.audit import audit_app
from modelcheck.cli.main import app
from modelcheck.config import Config, ConfigError, load_config, parse_shape, parse_shapes
from modelcheck.jobs.run import run_job
from modelcheck.models.specs import ModelSpec, SpecError, parse_spec, specs_from_config
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures" / "inputs"
RGBD = "1,3,64,64;1,1,64,64"


# ----- shapes: parsing (fast) ---------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("1,3,224,224", ((1, 3, 224, 224),)),
    (" 1, 3,64,64 ; 1,1,64,64 ", ((1, 3, 64, 64), (1, 1, 64, 64))),
    ([1, 3, 8, 8], ((1, 3, 8, 8),)),
    ([[1, 3, 8, 8], [1, 1, 8, 8]], ((1, 3, 8, 8), (1, 1, 8, 8))),
    (["1,3,8,8", [1, 1, 8, 8]], ((1, 3, 8, 8), (1, 1, 8, 8))),
])
def test_shapes_are_separated_by_semicolons_or_given_as_lists(value: Any, expected: tuple) -> None:
    assert parse_shapes(value) == expected
    assert parse_shape("1,3,8,8") == (1, 3, 8, 8)  # one input's shape, as before


@pytest.mark.parametrize("value", [
    "1,3,x,8", "1,3,8,8;", ";1,3,8,8", "1,3,8,8;;1,1,8,8", "1,3,8,8;1,0,8,8", "1,3,8,8;1,-1", "", "1.5,3",
    [1, [3, 8]], [[1, 3], [1, "a"]], [], [[]], True, {"a": 1},
])
def test_a_bad_shape_is_a_one_line_error_naming_the_value(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        parse_shapes(value)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"input shape {value!r}")


@pytest.mark.parametrize("shape", ["1,3,8,8;1,x", "1,3;;1"])
def test_the_command_lines_reject_a_bad_shape_in_one_line(shape: str) -> None:
    for command, args in ((app, [str(FIXTURES / "modes.py")]), (audit_app, [str(FIXTURES)])):
        result = CliRunner().invoke(command, [*args, "--input-shape", shape])
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"modelcheck: error: input shape {shape!r}"), lines


def test_the_command_line_rejects_a_bad_inputs_callable() -> None:
    result = CliRunner().invoke(app, [str(FIXTURES / "modes.py"), "--inputs", "make_inputs"])
    assert result.exit_code == 2
    assert "--inputs 'make_inputs' must look like package.module:make_inputs" in result.stderr
    result = CliRunner().invoke(app, [str(FIXTURES / "modes.py"), "--model", f"{FIXTURES}/modes.py:Fusion",
                                      "--inputs", "nowhere/file.py:make"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "modelcheck: error: --inputs 'nowhere/file.py:make': nowhere/file.py: no such file"


def test_pyproject_takes_several_shapes_and_an_inputs_callable(tmp_path: Path) -> None:
    (tmp_path / "make_inputs.py").write_text((FIXTURES / "make_inputs.py").read_text())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.modelcheck]\ninput-shape = [[1, 3, 64, 64], [1, 1, 64, 64]]\n'
        'inputs = "make_inputs.py:rgbd_inputs"\n\n'
        '[tool.modelcheck.models]\n'
        f'"{FIXTURES}/rgbd.py:RGBDNet" = {{}}\n'
        f'"{FIXTURES}/modes.py:DefaultMode" = {{ input-shape = "1,3,16,16", inputs = "pkg.mod:make" }}\n'
        f'"{FIXTURES}/modes.py:Fusion" = {{ input-shape = "1,3,8,8;1,3,8,8" }}\n')
    config = load_config(tmp_path / "pyproject.toml")
    assert config.input_shapes == ((1, 3, 64, 64), (1, 1, 64, 64)) and config.input_shape == (1, 3, 64, 64)
    assert config.inputs == f"{tmp_path}/make_inputs.py:rgbd_inputs"  # relative to the pyproject
    rgbd, default_mode, fusion = specs_from_config([], {}, config)
    assert (rgbd.input_shapes, rgbd.inputs) == (config.input_shapes, config.inputs)
    assert (default_mode.input_shapes, default_mode.inputs) == (((1, 3, 16, 16),), "pkg.mod:make")
    assert (fusion.input_shapes, fusion.input_shape) == (((1, 3, 8, 8), (1, 3, 8, 8)), (1, 3, 8, 8))

    (tmp_path / "pyproject.toml").write_text('[tool.modelcheck]\ninput-shape = "1,3;1,x"\n')
    with pytest.raises(ConfigError, match=r"input shape '1,3;1,x': input 2: .* not a comma-separated"):
        load_config(tmp_path / "pyproject.toml")
    with pytest.raises(SpecError, match=r"\[tool.modelcheck.models\] 'a.py:Net': input shape '1;': input 2 is empty"):
        specs_from_config([], {}, Config(models=[{"spec": "a.py:Net", "input-shape": "1;"}]))


def test_spec_json_carries_every_shape_and_still_reads_a_single_one() -> None:
    spec = parse_spec(f"{FIXTURES}/rgbd.py:RGBDNet", input_shapes=((1, 3, 64, 64), (1, 1, 64, 64)),
                      inputs=f"{FIXTURES}/make_inputs.py:rgbd_inputs")
    data = spec.to_json()
    assert data["input_shape"] == [1, 3, 64, 64] and data["input_shapes"] == [[1, 3, 64, 64], [1, 1, 64, 64]]
    again = ModelSpec.from_json(json.loads(json.dumps(data)))
    assert (again.input_shapes, again.inputs) == (spec.input_shapes, spec.inputs)
    old = {"text": "a.py:Net", "name": "Net", "path": "a.py", "input_shape": [1, 3, 8, 8]}
    assert ModelSpec.from_json(old).input_shapes == ((1, 3, 8, 8),)
    # a writer that only knows input_shape changed it: that one wins
    assert ModelSpec.from_json({**data, "input_shape": [2, 3, 8, 8]}).input_shapes == ((2, 3, 8, 8),)
    assert ModelSpec.from_json({**old, "input_shape": [[1, 3], [1, 1]]}).input_shapes == ((1, 3), (1, 1))
    assert ModelSpec("a.py:Net", "Net", input_shape=(1, 3, 8, 8)).input_shapes == ((1, 3, 8, 8),)


# ----- example inputs and forward's signature (in-process: the fixtures only define classes) -----

def _model(name: str) -> Any:
    from modelcheck.models.specs import build_model

    return build_model(parse_spec(f"{FIXTURES}/{'rgbd' if name == 'RGBDNet' else 'modes'}.py:{name}")).eval()


def test_make_inputs_gives_one_tensor_per_shape_and_the_forward_kwargs() -> None:
    import torch
    from modelcheck.models.specs import make_input, make_inputs

    spec = parse_spec(f"{FIXTURES}/rgbd.py:RGBDNet", input_shapes=((1, 3, 8, 8), (1, 1, 8, 8)))
    inputs = make_inputs(spec, 0)
    assert inputs.shapes() == [[1, 3, 8, 8], [1, 1, 8, 8]] and inputs.kwargs == {}
    assert torch.equal(inputs.args[0], make_input(spec, 0))  # the first input is what one shape gave
    assert torch.equal(make_inputs(spec, 0).args[1], inputs.args[1])
    assert not torch.equal(make_inputs(spec, 1).args[1], inputs.args[1])
    model = _model("RGBDNet")
    assert inputs.names(model) == ["rgb", "depth"]

    spec = parse_spec(f"{FIXTURES}/modes.py:RequiredMode", input_shape=(1, 3, 8, 8))
    spec.forward_kwargs = {"mode": "test"}
    inputs = make_inputs(spec, 0, _model("RequiredMode"))
    assert inputs.kwargs == {"mode": "test"} and inputs.constants == {"mode": "test"}
    assert [list(t.shape) for t in inputs.tensors] == [[1, 3, 8, 8]] and inputs.names() == ["input"]


def test_make_inputs_calls_the_inputs_callable_with_or_without_the_model() -> None:
    import torch
    from modelcheck.models.specs import make_inputs

    model = _model("RGBDNet")
    spec = parse_spec(f"{FIXTURES}/rgbd.py:RGBDNet", inputs=f"{FIXTURES}/make_inputs.py:rgbd_inputs")
    first, again = make_inputs(spec, 0, model), make_inputs(spec, 0, model)
    assert first.shapes() == [[1, 3, 32, 32], [1, 1, 32, 32]]
    assert all(torch.equal(a, b) for a, b in zip(first.tensors, again.tensors, strict=True))  # seeded
    spec.inputs = f"{FIXTURES}/make_inputs.py:rgbd_keywords"  # takes the model; a dict in another order
    keywords = make_inputs(spec, 0, model)
    assert list(keywords.kwargs) == ["rgb", "depth"] and keywords.names(model) == ["rgb", "depth"]
    spec.inputs = f"{FIXTURES}/make_inputs.py:with_mode"
    mixed = make_inputs(spec, 0, _model("RequiredMode"))
    assert mixed.shapes() == [[1, 3, 16, 16]] and mixed.args[1] == "train"


def test_the_bound_forward_bakes_in_the_constants_and_comes_off_again() -> None:
    import torch
    from modelcheck.models.specs import ExampleInputs

    model = _model("RequiredMode")
    x = torch.randn(1, 3, 8, 8)
    inputs = ExampleInputs((x,), {"mode": "test"})
    with torch.no_grad():
        expected = inputs.call(model)
        with inputs.bound(model) as tensors:
            assert torch.equal(model(*tensors), expected)
    assert "forward" not in vars(model)
    assert torch.equal(inputs.with_tensors([x * 2]).args[0], x * 2)


def test_a_forward_needing_more_inputs_names_them_all() -> None:
    import torch
    from modelcheck.models.specs import ExampleInputs, MissingInputs, check_forward_inputs

    one = ExampleInputs((torch.zeros(1, 3, 8, 8),))
    with pytest.raises(MissingInputs) as caught:
        check_forward_inputs(_model("Fusion"), one)
    assert (caught.value.tensors, caught.value.settings) == (["x", "skip"], [])
    assert str(caught.value) == ("Fusion.forward needs 2 inputs (x, skip); give --input-shape with 2 shapes separated "
                                 "by ';' (like 1,3,8,8;1,3,8,8) or --inputs module:make_inputs")
    with pytest.raises(MissingInputs) as caught:
        check_forward_inputs(_model("RequiredMode"), one)
    assert (caught.value.tensors, caught.value.settings) == ([], ["mode"])
    assert "RequiredMode.forward needs a value for mode (not a tensor, no default)" in str(caught.value)
    check_forward_inputs(_model("DefaultMode"), one)  # mode has a default
    check_forward_inputs(_model("RequiredMode"), ExampleInputs(one.args, {"mode": "test"}))
    with pytest.raises(TypeError, match=r"DefaultMode.forward takes 2 input\(s\) \(x, mode\) but 3 were given"):
        check_forward_inputs(_model("DefaultMode"), ExampleInputs(one.tensors * 3))


# ----- the pipeline (child processes, real exporters and runtimes) -------------------------------

def _check(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, [*args, "--artifacts", str(tmp_path / "artifacts"), "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def _stages(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {stage["name"]: stage for stage in report["stages"]}


def _graph_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


@pytest.mark.slow
def test_a_two_input_model_is_traced_exported_and_matches_onnxruntime(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = _check(["rgbd.py", "--model", "rgbd.py:RGBDNet", "--input-shape", RGBD, "--target", "onnx",
                           "--opset", "17"], tmp_path, monkeypatch)
    assert code == 0, report
    (model,) = report["models"]
    assert (model["status"], model["graph"]["method"]) == ("ok", "torch.jit.trace")
    assert model["graph"]["input_shapes"] == [[1, 3, 64, 64], [1, 1, 64, 64]]
    assert {"rgb.body.3", "depth.body.3", "up"} <= set(model["graph"]["modules_called"])  # paths unchanged
    stages = _stages(report)
    assert [stages[name]["status"] for name in ("export", "onnx_check", "onnxruntime")] == ["passed"] * 3
    assert "inputs rgb 1×3×64×64, depth 1×1×64×64" in stages["export"]["detail"]
    assert "2 output(s) 1×1×64×64, 1×8×32×32 match PyTorch" in stages["onnxruntime"]["detail"]
    assert stages["onnxruntime"]["max_abs_diff"] < 1e-5
    artifacts = tmp_path / "artifacts" / "onnx"  # each target's files in a folder of its own
    assert _graph_inputs(artifacts / "model.onnx") == ["rgb", "depth"]
    written = json.loads((artifacts / "report.json").read_text())
    assert written["input_shapes"] == [[1, 3, 64, 64], [1, 1, 64, 64]] and written["input_names"] == ["rgb", "depth"]


@pytest.mark.slow
@pytest.mark.caffe2
def test_a_two_input_model_runs_on_caffe2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_caffe2()
    code, report = _check(["rgbd.py", "--model", "rgbd.py:RGBDNet", "--input-shape", RGBD], tmp_path, monkeypatch)
    assert code == 0, report
    stages = _stages(report)
    assert {name: stage["status"] for name, stage in stages.items()} == dict.fromkeys(
        ("export", "onnx_check", "onnxruntime", "caffe2"), "passed")
    for name in ("onnxruntime", "caffe2"):
        assert "2 output(s) 1×1×64×64, 1×8×32×32 match PyTorch" in stages[name]["detail"]
        assert stages[name]["max_abs_diff"] < 1e-5
    assert (tmp_path / "artifacts" / "caffe2" / "predict_net.pb").is_file()


@pytest.mark.slow
def test_a_forward_with_a_default_mode_runs_with_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = _check(["modes.py", "--model", "modes.py:DefaultMode", "--input-shape", "1,3,16,16",
                           "--target", "onnx"], tmp_path, monkeypatch)
    assert code == 0, report
    assert _stages(report)["onnxruntime"]["status"] == "passed"
    assert "1 output(s) 1×4×16×16" in _stages(report)["onnxruntime"]["detail"]  # mode="test": one output


@pytest.mark.slow
def test_a_required_non_tensor_argument_comes_from_forward_kwargs(tmp_path: Path) -> None:
    import onnx
    from modelcheck.smoke.run import run_smoke
    from modelcheck.targets import make_target
    from modelcheck.trace.run import SourcePaths, inspect_spec

    spec = parse_spec(f"{FIXTURES}/modes.py:RequiredMode", input_shape=(1, 3, 16, 16))
    spec.forward_kwargs = {"mode": "test"}
    model, _ = inspect_spec(spec, 60.0, SourcePaths({}))
    assert (model.status, model.graph["constants"]) == ("ok", {"mode": "'test'"}), model.detail
    outcome = run_smoke(spec, make_target("onnx", 17, None), Config(), [], tmp_path)
    stages = {stage.name: stage for stage in outcome.stages}
    assert stages["onnxruntime"].status == "passed", stages
    assert "mode='test' (constant)" in stages["export"].detail
    graph = onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph
    assert "Sigmoid" in {node.op_type for node in graph.node}  # the "test" branch, baked in
    assert _graph_inputs(tmp_path / "onnx" / "model.onnx") == ["input"]

    spec.forward_kwargs = {}
    model, _ = inspect_spec(spec, 60.0, SourcePaths({}))
    assert (model.status, model.stage, model.needs_inputs) == ("failed", "forward", [])
    assert "RequiredMode.forward needs a value for mode" in model.detail


@pytest.mark.slow
def test_an_inputs_callable_returning_a_tuple_feeds_every_stage(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = _check(["rgbd.py", "--model", "rgbd.py:RGBDNet", "--inputs", "make_inputs.py:rgbd_inputs",
                           "--input-shape", "1,3,8,8", "--target", "onnx"], tmp_path, monkeypatch)
    assert code == 0, report
    (model,) = report["models"]
    assert model["graph"]["input_shapes"] == [[1, 3, 32, 32], [1, 1, 32, 32]]  # --inputs wins over the shape
    stages = _stages(report)
    assert stages["onnxruntime"]["status"] == "passed"
    assert "inputs rgb 1×3×32×32, depth 1×1×32×32" in stages["export"]["detail"]


@pytest.mark.slow
def test_two_inputs_and_one_shape_is_a_clear_needs_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, report = _check(["modes.py", "--model", "modes.py:Fusion", "--input-shape", "1,3,8,8"], tmp_path,
                          monkeypatch)
    assert code == 1
    (model,) = report["models"]
    assert (model["status"], model["stage"], model["needs_inputs"]) == ("failed", "forward", ["x", "skip"])
    assert "Fusion.forward needs 2 inputs (x, skip); give --input-shape with 2 shapes separated by ';'" \
        in model["detail"]
    assert [stage["status"] for stage in report["stages"]] == ["skipped"] * 4
    assert not any("no finding predicted" in note for note in report["notes"])
    # given both shapes, the very same block traces
    code, report = _check(["modes.py", "--model", "modes.py:Fusion", "--input-shape", "1,3,8,8;1,3,8,8",
                           "--no-smoke"], tmp_path, monkeypatch)
    assert (code, report["models"][0]["status"]) == (0, "ok")


@pytest.mark.slow
def test_fix_verification_compares_on_every_input(tmp_path: Path) -> None:
    for spec in (parse_spec(f"{FIXTURES}/rgbd.py:RGBDNet", input_shapes=((1, 3, 16, 16), (1, 1, 16, 16))),
                 parse_spec(f"{FIXTURES}/modes.py:RequiredMode", input_shape=(1, 3, 8, 8))):
        spec.forward_kwargs = {"mode": "test"} if spec.name == "RequiredMode" else {}
        payload = {"spec": spec.to_json(), "workdir": str(tmp_path)}
        reference = run_job("verify_fix", {**payload, "phase": "reference"}, 60.0)
        assert reference.ok, reference.error
        check = run_job("verify_fix", {**payload, "phase": "check", "exactness": "bitwise"}, 60.0)
        assert check.ok, check.error
        assert (check.value["ok"], check.value["bit_identical"]) == (True, True), check.value


def test_the_audit_passes_every_shape_and_the_inputs_callable_to_its_jobs() -> None:
    from modelcheck.audit.run import AuditOptions
    from modelcheck.cli.main import apply_flags
    from modelcheck.targets import make_target

    config = Config()
    apply_flags(config, input_shape=RGBD, inputs="make_inputs.py:rgbd_inputs")
    options = AuditOptions(target=make_target("caffe2", None, None), config=config).task_options()
    assert options["input_shapes"] == [[1, 3, 64, 64], [1, 1, 64, 64]] and options["input_shape"] == [1, 3, 64, 64]
    assert options["inputs"] == "make_inputs.py:rgbd_inputs"
    spec = ModelSpec.from_json({"text": "a.py:Net", "name": "Net", "path": "a.py", **{
        key: options[key] for key in ("input_shape", "input_shapes", "inputs")}})
    assert (spec.input_shapes, spec.inputs) == (((1, 3, 64, 64), (1, 1, 64, 64)), "make_inputs.py:rgbd_inputs")
