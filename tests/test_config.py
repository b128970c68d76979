"""[tool.modelcheck] in pyproject.toml: found by walking up, merged with flags, strict about values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelcheck.cli.main import app
from modelcheck.config import Config, ConfigError, find_pyproject, load_config
from typer.testing import CliRunner

MODEL = (
    "import torch.nn as nn\n"
    "up = nn.Upsample(scale_factor=2, mode='bilinear')\n"
    "pool = nn.MaxPool2d(2, 2, ceil_mode=True)\n"
)


def project(tmp_path: Path, table: str, files: dict[str, str] | None = None) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[project]\nname = 'demo'\n\n[tool.modelcheck]\n{table}\n")
    for name, text in (files or {"src/nets/model.py": MODEL}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def run(*args: str) -> tuple[int, dict | str, str]:
    result = CliRunner().invoke(app, ["--static-only", *args])
    out = result.stdout
    if "--format" in args and "json" in args and result.exit_code != 2:
        return result.exit_code, json.loads(out), result.stderr
    return result.exit_code, out, result.stderr


def codes(report: dict) -> list[str]:
    return sorted(f["code"] for f in report["findings"])


def test_pyproject_is_found_by_walking_up_from_the_checked_file(tmp_path):
    root = project(tmp_path, 'select = ["MC3"]')
    (root / "src" / "pyproject.toml").write_text("[project]\nname = 'inner'\n")  # no [tool.modelcheck]: skipped
    found = find_pyproject([root / "src" / "nets" / "model.py"])
    assert found == root / "pyproject.toml"
    status, report, _ = run(str(root / "src" / "nets" / "model.py"), "--format", "json")
    assert codes(report) == ["MC301"]
    assert status == 0  # MC301 is a warning at caffe2/opset 9


def test_no_pyproject_means_defaults(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    assert load_config(find_pyproject([tmp_path / "model.py"])) == Config()


@pytest.mark.parametrize(
    ("select", "ignore", "enabled"),
    [
        (["MC"], [], {"MC101", "MC201", "MC202", "MC301"}),
        (["MC2"], [], {"MC201", "MC202"}),
        (["MC2", "MC301"], ["MC202"], {"MC201", "MC301"}),
        (["MC201"], ["MC2"], {"MC201"}),  # the longer prefix wins, as in ruff
        (["MC"], ["MC1", "MC3"], {"MC201", "MC202"}),
    ],
)
def test_select_and_ignore_by_prefix(select, ignore, enabled):
    config = Config(select=select, ignore=ignore)
    assert {c for c in ("MC101", "MC201", "MC202", "MC301") if config.code_enabled(c)} == enabled


def test_per_file_ignores_and_exclude(tmp_path):
    root = project(
        tmp_path,
        'exclude = ["vendored"]\n[tool.modelcheck.per-file-ignores]\n"src/legacy/*" = ["MC2"]\n',
        {"src/legacy/old.py": MODEL, "src/new.py": MODEL, "vendored/third.py": MODEL},
    )
    status, report, _ = run(str(root), "--format", "json")
    by_file = {}
    for finding in report["findings"]:
        by_file.setdefault(Path(finding["path"]).name, []).append(finding["code"])
    assert by_file == {"old.py": ["MC301"], "new.py": ["MC201", "MC301"]}
    assert status == 1


def test_command_line_flags_override_pyproject(tmp_path):
    root = project(tmp_path, 'target = "onnx"\nopset = 17\nselect = ["MC3"]')
    _, report, _ = run(str(root), "--format", "json")
    assert (report["target"], report["opset"], codes(report)) == ("onnx", 17, [])
    _, report, _ = run(str(root), "--format", "json", "--target", "caffe2", "--select", "MC2")
    assert (report["target"], report["opset"], codes(report)) == ("caffe2", 9, ["MC201"])


def test_fail_on_from_pyproject(tmp_path):
    root = project(tmp_path, 'select = ["MC3"]\nfail-on = "warning"')
    assert run(str(root))[0] == 1
    assert run(str(root), "--fail-on", "never")[0] == 0


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ('target = "tflite"', "target must be one of caffe2, "),
        ('opset = "nine"', "opset must be an integer"),
        ("opset = 99", "opset 99 is outside"),
        ('select = "MC2, MC3"', "is not a rule code or prefix"),
        ('ignore = ["E501"]', "is not a rule code or prefix"),
        ("select = [2]", "select must be a list of strings"),
        ('per-file-ignores = ["MC2"]', "per-file-ignores must be a table"),
        ('fail-on = "fatal"', "fail-on must be one of error, warning, info, never"),
        ("timeout = -1", "timeout must be a positive number"),
        ("colour = true", "unknown [tool.modelcheck] key(s): colour"),
        ('target = "caffe2', "not valid TOML"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_file(tmp_path, table, words):
    root = project(tmp_path, table)
    status, out, err = run(str(root))
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("modelcheck: error: ")
    assert words in lines[0]
    if "outside" not in words:
        assert "pyproject.toml" in lines[0]


def test_load_config_raises_config_error(tmp_path):
    root = project(tmp_path, 'exporter = "onnxruntime"')
    with pytest.raises(ConfigError, match="exporter must be one of torchscript, dynamo"):
        load_config(root / "pyproject.toml")


def test_bad_select_flag_is_a_usage_error(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    status, _, err = run(str(tmp_path / "model.py"), "--select", "XYZ")
    assert status == 2
    assert "--select: 'XYZ' is not a rule code or prefix" in err


@pytest.mark.parametrize("flag", ["--select", "--ignore"])
def test_a_prefix_that_matches_no_rule_is_a_usage_error(tmp_path, flag):
    """MC9 is well-formed but selects nothing: a typo must not silently switch every rule off."""
    (tmp_path / "model.py").write_text(MODEL)
    status, _, err = run(str(tmp_path / "model.py"), flag, "MC9")
    assert status == 2
    assert f"{flag}: 'MC9' matches no rule" in err
    assert run(str(tmp_path / "model.py"), flag, "MC30")[0] != 2  # MC30 is a prefix of MC301


def test_a_pyproject_code_that_matches_no_rule_names_the_file(tmp_path):
    root = project(tmp_path, 'ignore = ["MC299"]')
    with pytest.raises(ConfigError, match=r"pyproject.toml.*'MC299' matches no rule"):
        load_config(root / "pyproject.toml")
