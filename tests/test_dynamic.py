"""The dynamic pass: specs, discovery, the inspect child job, merging with static findings, CLI.

Fixture models live in tests/fixtures/dynamic/ and are run for real in child processes (torch
2.13 CPU): built, walked, pickled with pickle and torch.save, traced. Expected lines come from
the fixture text itself (the line holding a marker), never from modelcheck.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from modelcheck.cli.main import app
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Severity
from modelcheck.models.specs import SpecError, discovery_files, parse_spec, spec_files, specs_from_config
from modelcheck.trace.run import dedupe, merge
from typer.testing import CliRunner

FIXTURES = Path(__file__).parent / "fixtures" / "dynamic"


def line_of(file: str, needle: str, nth: int = 0) -> int:
    """The 1-based line of the ``nth`` line of a fixture containing ``needle``."""
    hits = [i for i, text in enumerate((FIXTURES / file).read_text().splitlines(), 1) if needle in text]
    return hits[nth]


def lambda_lines(file: str) -> list[int]:
    """Lines of a fixture holding a ``lambda`` expression."""
    text = (FIXTURES / file).read_text().splitlines()
    return [i for i, line in enumerate(text, 1) if re.search(r"\blambda\b", line.split("#")[0])]


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any], str]:
    """Run ``modelcheck ... --format json`` in-process from the fixtures folder."""
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, [*args, "--format", "json", "--no-smoke"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout), result.output


def by_code(report: dict[str, Any], code: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["code"] == code]


# ----- specs (parent side: plain parsing, nothing imported) ---------------------------------------

def test_parse_spec_accepts_files_and_modules() -> None:
    spec = parse_spec(str(FIXTURES / "zoo.py") + ":Net", {"depth": 1}, (1, 3, 8, 8), "float64")
    assert (spec.path, spec.module, spec.name, spec.kwargs, spec.input_shape, spec.dtype) == (
        str(FIXTURES / "zoo.py"), None, "Net", {"depth": 1}, (1, 3, 8, 8), "float64")
    spec = parse_spec("torchvision.models:resnet18")
    assert (spec.path, spec.module, spec.name) == (None, "torchvision.models", "resnet18")
    assert parse_spec("pkg.zoo:Factory.build").name == "Factory.build"


@pytest.mark.parametrize(("text", "reason"), [
    ("zoo.py", "must look like"),
    ("missing_file.py:Net", "no such file"),
    ("pkg.mod:not-a-name", "is not a Python name"),
    ("pkg..mod:Net", "neither a .py file nor a dotted module"),
])
def test_parse_spec_rejects_bad_specs_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(SpecError, match=re.escape(reason)) as error:
        parse_spec(text)
    assert text in str(error.value)


def test_spec_files_finds_the_files_of_file_and_module_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--model pkg.mod:Name`` gets the static pass of pkg/mod.py too, so its findings merge."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name in ("pkg/__init__.py", "pkg/mod.py", "pkg/sub/__init__.py", "net.py"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    assert spec_files(["net.py:Net", "pkg.mod:Net", "pkg.sub:make", "pkg.mod:Other", "torchvision.models:resnet18",
                       "missing.py:Net"]) == [Path("net.py"), Path("pkg/mod.py"), Path("pkg/sub/__init__.py")]


def test_pyproject_models_get_their_own_shape_args_and_paths_relative_to_the_pyproject() -> None:
    config = Config(root=FIXTURES, input_shape=(1, 3, 64, 64), models=[
        {"spec": "zoo.py:Net", "input-shape": "1,3,16,16", "args": {"depth": 1}},
        {"spec": "config_net.py:ConfigNet", "dtype": "float64"},
    ])
    first, second = specs_from_config([], {}, config)
    assert (first.path, first.input_shape, first.kwargs, first.origin) == (
        str(FIXTURES / "zoo.py"), (1, 3, 16, 16), {"depth": 1}, "pyproject")
    assert (second.input_shape, second.dtype) == ((1, 3, 64, 64), "float64")
    # --model flags win over the pyproject table
    assert [s.name for s in specs_from_config([str(FIXTURES / "zoo.py") + ":Block"], {}, config)] == ["Block"]
    with pytest.raises(SpecError, match="unknown key"):
        specs_from_config([], {}, Config(root=FIXTURES, models=[{"spec": "zoo.py:Net", "shape": "1"}]))


def test_discovery_never_imports_files_that_run_work_at_import() -> None:
    sources = {
        "model.py": "import sys\nimport torch.nn as nn\nsys.path.append('..')\nclass Net(nn.Module): pass\n",
        "train.py": "import torch.nn as nn\nfor epoch in range(10):\n    pass\n",
        "script.py": "import torch.nn as nn\nmain()\n",
        "test_model.py": "import torch.nn as nn\n",
        "utils.py": "import os\n",
    }
    files, notes = discovery_files(sources)
    assert list(files) == ["model.py"]
    assert any("train.py" in n and "line 2" in n for n in notes)
    assert any("script.py" in n and "main()" in n for n in notes)


# ----- merging (parent side, plain data) ----------------------------------------------------------

def _finding(path: str, line: int, column: int, evidence: str, code: str = "MC101",
             severity: Severity = Severity.ERROR, message: str = "m") -> Finding:
    return Finding(code, message, severity, Location(path, line, column), fixable=evidence == "static",
                   evidence=evidence, model="m.py:Net" if evidence == "dynamic" else None,
                   module_path="4.0.0" if evidence == "dynamic" else None)


def test_merge_makes_one_finding_per_construct_across_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("x = 1\n")
    absolute = str(tmp_path / "m.py")
    static = [_finding("m.py", 3, 5, "static"), _finding("m.py", 3, 30, "static"),
              _finding("m.py", 9, 1, "static", code="MC301", severity=Severity.INFO, message="may")]
    dynamic = [_finding(absolute, 3, 30, "dynamic"), _finding(absolute, 9, 1, "dynamic", code="MC301",
                                                               severity=Severity.WARNING, message="is"),
               _finding("m.py", 12, 1, "dynamic", code="MC104")]
    merged = merge(static, dynamic)
    assert [(f.location.line, f.location.column, f.code, f.evidence) for f in merged] == [
        (3, 5, "MC101", "static"), (3, 30, "MC101", "both"), (9, 1, "MC301", "both"), (12, 1, "MC104", "dynamic")]
    both = merged[1]
    assert (both.location.path, both.model, both.module_path, both.fixable) == ("m.py", "m.py:Net", "4.0.0", True)
    # the live model settles what the source left open: severity and message come from it
    assert (merged[2].severity, merged[2].message) == (Severity.WARNING, "is")
    assert merged[3].fixable is False  # --fix works from source; the static pass did not see it


def test_dedupe_keeps_one_finding_per_place_and_the_most_severe() -> None:
    findings = [_finding("a.py", 4, 2, "dynamic", severity=Severity.WARNING),
                _finding("a.py", 4, 2, "dynamic", severity=Severity.ERROR),
                _finding("a.py", 4, 9, "dynamic")]
    kept = dedupe(findings)
    assert [(f.location.column, f.severity) for f in kept] == [(2, Severity.ERROR), (9, Severity.ERROR)]


# ----- the real thing: child processes, torch, the CLI --------------------------------------------

@pytest.fixture(scope="module")
def fixture_report() -> dict[str, Any]:
    """One CLI run over four fixture models (each built, walked, pickled and traced in its child)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        code, report, _ = run_cli([
            "config_net.py", "seg_model.py", "shape_interp.py", "closure_net.py", "--input-shape", "1,3,32,32",
            "--model", "config_net.py:ConfigNet", "--model", "seg_model.py:SegNet",
            "--model", "shape_interp.py:ShapeFuse", "--model", "closure_net.py:ClosureNet",
            "--model", "closure_net.py:ResourceNet",
        ], monkeypatch)
    assert code == 1
    return report


@pytest.mark.slow
def test_every_model_is_built_walked_pickled_and_traced(fixture_report: dict[str, Any]) -> None:
    models = {m["spec"]: m for m in fixture_report["models"]}
    assert list(models) == ["config_net.py:ConfigNet", "seg_model.py:SegNet", "shape_interp.py:ShapeFuse",
                            "closure_net.py:ClosureNet", "closure_net.py:ResourceNet"]
    assert all(m["status"] == "ok" and m["parameters"] > 0 for m in models.values())
    assert all(m["graph"]["method"] == "torch.jit.trace" for m in models.values())
    # a successful pickle probe is a verified fact, not an absence of findings
    for spec in ("config_net.py:ConfigNet", "seg_model.py:SegNet", "shape_interp.py:ShapeFuse"):
        probe = models[spec]["pickle"]
        assert probe["ok"] is True and probe["failures"] == []
        assert probe["pickle_dumps"]["ok"] and probe["torch_save"]["ok"]


@pytest.mark.slow
def test_config_built_layers_are_found_at_the_line_that_built_them(fixture_report: dict[str, Any]) -> None:
    """Pools and upsamplers made in loops from a config dict: only the live model knows their settings."""
    pool_line = line_of("config_net.py", "nn.MaxPool2d(")
    up_line = line_of("config_net.py", "nn.Upsample(")
    pools = [f for f in by_code(fixture_report, "MC301") if f["path"] == "config_net.py"]
    assert [(f["line"], f["evidence"], f["module_path"], f["severity"]) for f in pools] == [
        (pool_line, "both", "encoder.2", "warning")]  # encoder.5 has ceil_mode=False: no finding
    ups = [f for f in by_code(fixture_report, "MC201") if f["path"] == "config_net.py"]
    assert [(f["line"], f["evidence"], f["module_path"]) for f in ups] == [(up_line, "both", "decoder.0")]
    assert "mode='bilinear'" in ups[0]["message"]  # the source only says mode=decoder["mode"]


@pytest.mark.slow
def test_decoder_mode_from_a_constructor_argument_is_found_where_interpolate_is_called(
    fixture_report: dict[str, Any],
) -> None:
    """seg_layers.py is imported by seg_model.py as a sibling and was not given on the command line:
    the dynamic pass points at it, so the static pass checks it too and the two merge."""
    line = line_of("seg_layers.py", "F.interpolate(")
    found = [f for f in by_code(fixture_report, "MC201") if f["path"] == "seg_layers.py"]
    assert [(f["line"], f["column"], f["evidence"], f["model"], f["module_path"]) for f in found] == [
        (line, 13, "both", "seg_model.py:SegNet", "blocks.0")]
    assert found[0]["fixable"] is False  # the source says mode=self.upscale_mode: no exact rewrite
    assert "also checked, as files the model is built from: seg_layers.py" in fixture_report["notes"]
    assert fixture_report["summary"]["also_checked"] == ["seg_layers.py"]
    assert fixture_report["summary"]["files"] == 5


@pytest.mark.slow
def test_interpolate_to_a_tensor_shape_is_told_apart_from_a_constant_size(fixture_report: dict[str, Any]) -> None:
    shape_line = line_of("shape_interp.py", "size=y.shape[2:]")
    fixed_line = line_of("shape_interp.py", "size=(8, 8)")
    mc203 = [f for f in by_code(fixture_report, "MC203") if f["path"] == "shape_interp.py"]
    assert [(f["line"], f["evidence"]) for f in mc203] == [(shape_line, "both")]
    ops = {op["location"]["line"]: op for op in next(
        m for m in fixture_report["models"] if m["spec"] == "shape_interp.py:ShapeFuse")["graph"]["ops"]}
    assert ops[shape_line]["args"]["size_from_shape"] is True
    assert ops[shape_line]["args"]["size"] == [32, 32]
    assert ops[fixed_line]["args"]["size_from_shape"] is False
    pool_line = line_of("shape_interp.py", "F.max_pool2d(")
    assert ops[pool_line]["op"] == "torch.nn.functional.max_pool2d" and ops[pool_line]["args"]["ceil_mode"] is True
    assert [f["evidence"] for f in by_code(fixture_report, "MC301") if f["line"] == pool_line] == ["both"]


@pytest.mark.slow
def test_closure_from_init_is_one_finding_seen_both_ways(fixture_report: dict[str, Any]) -> None:
    line = line_of("closure_net.py", "def act(x):")
    found = [f for f in by_code(fixture_report, "MC102") if f["line"] == line]
    assert [(f["evidence"], f["model"], f["module_path"]) for f in found] == [
        ("both", "closure_net.py:ClosureNet", "(root)")]
    probe = next(m for m in fixture_report["models"] if m["spec"] == "closure_net.py:ClosureNet")["pickle"]
    assert probe["ok"] is False
    assert [(f["path"], f["kind"], f["defined_at"]) for f in probe["failures"]] == [
        ("act", "local_function", f"closure_net.py:{line}")]


@pytest.mark.slow
def test_pickle_probe_names_every_unpicklable_attribute_with_its_line(fixture_report: dict[str, Any]) -> None:
    probe = next(m for m in fixture_report["models"] if m["spec"] == "closure_net.py:ResourceNet")["pickle"]
    assert probe["ok"] is False and "Can't pickle" in probe["torch_save"]["error"]
    failures = {f["path"]: f for f in probe["failures"]}
    expected = {
        "body.0._forward_hooks[0]": ("lambda", line_of("closure_net.py", "register_forward_hook(lambda")),
        "body.1": ("local_class", line_of("closure_net.py", "class Gate(nn.Module)")),
        "lock": ("unpicklable", line_of("closure_net.py", "self.lock = threading.Lock()")),
        "steps": ("unpicklable", line_of("closure_net.py", "self.steps = (i for i in range(3))")),
    }
    assert {path: (f["kind"], f["line"]) for path, f in failures.items()} == expected
    assert failures["lock"]["type"] == "_thread.lock" and failures["steps"]["type"] == "generator"
    assert all(f["defined_at"] == f"closure_net.py:{f['line']}" and f["source"] for f in failures.values())
    codes = {(f["code"], f["line"]) for f in fixture_report["findings"] if f["model"] == "closure_net.py:ResourceNet"}
    assert codes == {("MC101", expected["body.0._forward_hooks[0]"][1]), ("MC103", expected["body.1"][1]),
                     ("MC104", expected["lock"][1]), ("MC104", expected["steps"][1])}


@pytest.mark.slow
def test_lua_converted_resnext_pickle_failures_and_merge_one_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambdas nested in a module-level nn.Sequential: every one named by path and line, merged 1:1."""
    code, report, _ = run_cli(["resnext_lua.py", "--model", "resnext_lua.py:resnext_small",
                               "--input-shape", "1,3,32,32"], monkeypatch)
    assert code == 1
    lines = lambda_lines("resnext_lua.py")
    assert len(lines) == 7
    lambdas = by_code(report, "MC101")
    assert sorted(f["line"] for f in lambdas) == lines
    assert {f["evidence"] for f in lambdas} == {"both"}
    assert all(f["model"] == "resnext_lua.py:resnext_small" and f["module_path"] for f in lambdas)
    (model,) = report["models"]
    assert model["status"] == "ok"
    failures = model["pickle"]["failures"]
    assert sorted(f["path"] for f in failures) == sorted([
        "4.0.0.lambda_func", "4.0.1.lambda_func", "4.1.0.lambda_func", "4.1.0.1.lambda_func",
        "4.1.1.lambda_func", "6.lambda_func", "7.0.lambda_func"])
    assert sorted(f["line"] for f in failures) == lines
    assert all(f["kind"] == "lambda" and f["defined_at"] == f"resnext_lua.py:{f['line']}" for f in failures)
    assert all("lambda" in f["source"] for f in failures)
    (pool,) = by_code(report, "MC301")
    pool_line = line_of("resnext_lua.py", "nn.MaxPool2d(")
    assert (pool["line"], pool["evidence"], pool["module_path"]) == (pool_line, "both", "3")


@pytest.mark.slow
def test_raise_hang_and_abort_become_reported_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    code, report, _ = run_cli([
        "broken_models.py", "--timeout", "6", "--input-shape", "1,3,8,8",
        "--model", "broken_models.py:RaisesInInit", "--model", "broken_models.py:HangsInForward",
        "--model", "broken_models.py:AbortsInForward",
    ], monkeypatch)
    assert code == 1
    raises, hangs, aborts = report["models"]
    assert (raises["status"], raises["stage"]) == ("failed", "build")
    assert "RuntimeError: weights file resnext_101_32x4d.pth not found" in raises["detail"]
    assert "broken_models.py" in raises["traceback"] and "inspect_model.py" not in raises["traceback"]
    assert (hangs["status"], hangs["stage"]) == ("timeout", "forward")
    assert f"broken_models.py:{line_of('broken_models.py', 'time.sleep(0.05)')} in forward" in hangs["detail"]
    assert (aborts["status"], aborts["stage"]) == ("crashed", "forward")
    assert "SIGABRT" in aborts["detail"]
    assert f"broken_models.py:{line_of('broken_models.py', 'os.abort()')} in forward" in aborts["detail"]
    # what was learned before the hang or the crash is still reported
    for model, nth in ((hangs, 0), (aborts, 1)):
        line = line_of("broken_models.py", "self.act = lambda x: x", nth)
        assert [(f["path"], f["line"]) for f in model["pickle"]["failures"]] == [("act", line)]
        assert any(f["line"] == line and f["evidence"] == "both" for f in by_code(report, "MC101"))


@pytest.mark.slow
def test_a_forward_with_two_inputs_is_named_and_not_smoke_tested(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """modelcheck feeds one tensor: say so, instead of an export failure blamed on missing rules."""
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, ["broken_models.py", "--model", "broken_models.py:TwoInputs", "--input-shape",
                                      "1,3,8,8", "--artifacts", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    (model,) = report["models"]
    assert (model["status"], model["stage"]) == ("failed", "forward")
    assert "TwoInputs.forward needs 2 inputs (image, mask)" in model["detail"]
    assert [s["status"] for s in report["stages"]] == ["skipped"] * 4
    assert not any("no finding predicted" in note for note in report["notes"])


@pytest.mark.slow
def test_discovery_picks_root_models_and_says_why_others_were_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    _, report, _ = run_cli(["zoo.py", "--input-shape", "1,3,16,16"], monkeypatch)
    assert [m["spec"] for m in report["models"]] == ["zoo.py:Net", "zoo.py:default_model"]
    notes = "\n".join(report["notes"])
    assert "skipped zoo.py:Block: a sub-block of zoo.py:Net (at blocks.0)" in notes
    assert "skipped zoo.py:Needy: needs argument(s) num_classes" in notes
    assert "skipped zoo.py:build_net: the same architecture as zoo.py:Net" in notes
    assert "skipped zoo.py:resnet_tiny: would load weights or files (pretrained=True" in notes
    assert "skipped zoo.py:train:" in notes and "skipped zoo.py:helper:" in notes
    (pool,) = by_code(report, "MC301")
    assert (pool["evidence"], pool["model"], pool["module_path"]) == ("both", "zoo.py:Net", "pool")


@pytest.mark.slow
def test_pyproject_models_table_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zoo.py").write_text((FIXTURES / "zoo.py").read_text())
    (tmp_path / "pyproject.toml").write_text(
        '[tool.modelcheck]\ninput-shape = "1,3,64,64"\n\n'
        '[tool.modelcheck.models]\n"zoo.py:Net" = { input-shape = "1,3,8,8", args = { depth = 1 } }\n')
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["zoo.py", "--format", "json", "--no-smoke"])
    report = json.loads(result.stdout)
    (model,) = report["models"]
    assert (model["spec"], model["status"]) == ("zoo.py:Net", "ok")
    assert model["parameters"] == 3 * 4 + 4 + 4 * 4 * 9 + 4  # stem + one Block: depth=1 was passed
    assert model["graph"]["modules_called"] == ["blocks.0.conv", "pool", "stem"]  # F.conv2d is traced too (MC5xx)


@pytest.mark.slow
def test_the_parent_process_never_imports_the_users_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported-by.txt"
    monkeypatch.setenv("MODELCHECK_TEST_MARKER", str(marker))
    _, report, _ = run_cli(["marker_net.py", "--input-shape", "1,3,8,8"], monkeypatch)
    assert [m["spec"] for m in report["models"]] == ["marker_net.py:MarkerNet"]
    pids = {int(p) for p in marker.read_text().split()}
    assert len(pids) == 2  # the discovery child and the inspect child, each its own process
    assert os.getpid() not in pids
    assert "marker_net" not in sys.modules
    assert not any(getattr(m, "__file__", None) and Path(m.__file__).name == "marker_net.py"
                   for m in list(sys.modules.values()))
    marker.unlink()
    run_cli(["marker_net.py", "--static-only"], monkeypatch)
    assert not marker.exists()  # --static-only runs nothing at all


@pytest.mark.slow
def test_bad_model_spec_is_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    result = CliRunner().invoke(app, ["zoo.py", "--model", "nowhere.py:Net"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "modelcheck: error: model spec 'nowhere.py:Net': nowhere.py: no such file"]


@pytest.mark.slow
def test_real_subprocess_json_and_static_only_stays_torch_free() -> None:
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "resnext_lua.py", "--model", "resnext_lua.py:resnext_small",
         "--input-shape", "1,3,32,32", "--format", "json", "--no-smoke"],
        cwd=FIXTURES, capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert [(f["evidence"], f["line"]) for f in by_code(report, "MC101")] == [
        ("both", line) for line in lambda_lines("resnext_lua.py")]
    assert report["models"][0]["pickle"]["ok"] is False
    check = (
        "import sys\nfrom typer.testing import CliRunner\nfrom modelcheck.cli.main import app\n"
        "r = CliRunner().invoke(app, ['resnext_lua.py', '--static-only', '--format', 'json'])\n"
        "assert r.exit_code == 1, r.output\nassert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=FIXTURES, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ----- files the model is built from: checked statically too (project files only) ---------------

LUA_LAYERS = '''import torch.nn as nn


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.lambda_func = fn

    def forward(self, x):
        return self.lambda_func(x)


identity = Lambda(lambda x: x)
view = Lambda(lambda x: x.view(x.size(0), -1))  # noqa: MC101
'''


def test_only_project_files_the_model_is_built_from_are_checked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model built from backbone files, an installed package, the stdlib, a vendored folder and
    a virtual environment: the static pass re-reads the project's own files only, once each, and
    their suppression comments and per-file-ignores hold."""
    from modelcheck.findings import ModelResult
    from modelcheck.targets import make_target
    from modelcheck.trace.run import check_more_files, is_project_file, model_files, project_roots

    project = tmp_path / "project"
    files = {
        "model.py": "import torch.nn as nn\n",
        "backbone/lua_net.py": LUA_LAYERS,
        "backbone/ignored.py": LUA_LAYERS,
        "vendored/net.py": LUA_LAYERS,
        ".venv/lib/python3.12/site-packages/layers/net.py": LUA_LAYERS,
        "build/lib/net.py": LUA_LAYERS,
    }
    for name, text in files.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    installed = tmp_path / "env" / "lib" / "python3.12" / "site-packages" / "zoo" / "net.py"
    elsewhere = tmp_path / "elsewhere" / "net.py"
    for path in (installed, elsewhere):
        path.parent.mkdir(parents=True)
        path.write_text(LUA_LAYERS)
    monkeypatch.chdir(project)
    config = Config(exclude=["vendored"], per_file_ignores={"backbone/ignored.py": ["MC1"]})
    roots = project_roots(["model.py"], config)
    assert roots == [project.resolve()]
    candidates = [*files, str(installed), str(elsewhere), os.__file__, re.__file__]
    assert [f for f in candidates if is_project_file(f, roots, config)] == [
        "model.py", "backbone/lua_net.py", "backbone/ignored.py"]

    result = check_more_files([*candidates, str(project / "backbone" / "lua_net.py")],
                              [str(project / "model.py")], make_target("caffe2"), config, roots=roots)
    assert list(result.sources) == ["backbone/lua_net.py", "backbone/ignored.py"]  # model.py: checked already
    assert result.files_checked == 2
    lambda_line = LUA_LAYERS.splitlines().index("identity = Lambda(lambda x: x)") + 1
    assert [(f.code, f.location.path, f.location.line) for f in result.findings] == [
        ("MC101", "backbone/lua_net.py", lambda_line)]  # the noqa line and the ignored file say nothing

    # without roots (the audit, checking installed models) every file counts
    assert check_more_files([str(installed)], [], make_target("caffe2"), config).files_checked == 1

    # the files a model is built from: its spec's file, its constructs' files, its pickle failures'
    spec = parse_spec("model.py:Net")
    seen = Finding("MC101", "lambda", Severity.ERROR, Location("backbone/lua_net.py", lambda_line, 12),
                   evidence="dynamic")
    model = ModelResult("model.py:Net", "ok", pickle={"ok": False, "failures": [
        {"defined_at": f"{installed}:13"}, {"defined_at": "backbone/ignored.py:13"}]})
    assert model_files(spec, [seen], model) == sorted(
        str(p.resolve()) for p in (project / "model.py", project / "backbone/lua_net.py",
                                   project / "backbone/ignored.py", installed))
