"""`modelcheck --static-only`: exit codes, the JSON document field by field, text for pipes,
rule documentation, bad input, and the promise that torch is never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modelcheck.cli.main import app
from static_helpers import FIXTURES
from typer.testing import CliRunner

CLEAN = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='nearest')\n"
WARN_ONLY = "import torch.nn as nn\npool = nn.MaxPool2d(2, 2, ceil_mode=True)\n"  # a warning at caffe2@9
ERROR = "import torch.nn as nn\n\n\nclass Up(nn.Module):\n    def __init__(self):\n" \
        "        super().__init__()\n        self.up = nn.Upsample(scale_factor=2,\n" \
        "                              mode='bilinear')\n"


def invoke(*args: str, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(app, ["--static-only", *args])
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, ["--static-only", *args])
    finally:
        os.chdir(old)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "args", "status"),
    [
        (CLEAN, [], 0),
        (WARN_ONLY, [], 0),
        (WARN_ONLY, ["--fail-on", "warning"], 1),
        (WARN_ONLY, ["--target", "caffe2", "--opset", "11"], 1),  # an error from opset 10
        (ERROR, [], 1),
        (ERROR, ["--fail-on", "never"], 0),
        (ERROR, ["--target", "onnx"], 0),  # ONNX Runtime at opset 17 computes bilinear right
    ],
)
def test_exit_codes(tmp_path, text, args, status):
    result = invoke(str(write(tmp_path, "model.py", text)), *args)
    assert result.exit_code == status, result.output


def test_json_document_field_by_field(tmp_path):
    write(tmp_path, "model.py", ERROR)
    result = invoke("model.py", "--format", "json", cwd=tmp_path)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["version"] == 2
    assert (doc["target"], doc["opset"], doc["targets"]) == ("caffe2", 9, ["caffe2"])
    [finding] = doc["findings"]
    assert finding["code"] == "MC201"
    assert finding["path"] == "model.py"  # as given on the command line
    # 1-based lines and columns spanning the call over its two lines; the end column is the one
    # after the last character, as in SARIF
    assert (finding["line"], finding["column"]) == (7, 19)
    assert (finding["end_line"], finding["end_column"]) == (8, 47)
    lines = ERROR.splitlines()
    assert lines[6][finding["column"] - 1:].startswith("nn.Upsample(")
    assert lines[7][: finding["end_column"] - 1].endswith("mode='bilinear')")
    assert finding["severity"] == "error"
    assert "mode='bilinear'" in finding["message"] and "opset 11" in finding["message"]
    assert finding["fixable"] is True
    assert finding["targets"] == ["caffe2"]
    summary = doc["summary"]
    assert summary["files"] == 1
    assert summary["findings"] == 1
    assert summary["by_severity"] == {"error": 1, "warning": 0, "info": 0}
    assert summary["by_code"] == {"MC201": 1}
    assert (summary["failures"], summary["predicted"]) == (0, 0)  # --static-only: no smoke stage ran


def test_several_targets_weigh_every_rule_at_each(tmp_path):
    """--target caffe2,onnx@17: the opset-9 upsampling error matters at caffe2 only, and says so."""
    write(tmp_path, "model.py", ERROR)
    result = invoke("model.py", "--static-only", "--format", "text", "--target", "caffe2,onnx", cwd=tmp_path)
    assert result.exit_code == 1
    assert "MC201" in result.stdout and "[error at caffe2]" in result.stdout
    assert result.stdout.rstrip().endswith("[targets caffe2 (opset 9), onnx]")
    doc = json.loads(invoke("model.py", "--static-only", "--format", "json", "--target", "onnx",
                            "--target", "caffe2", cwd=tmp_path).stdout)
    assert doc["targets"] == ["onnx", "caffe2"] and doc["findings"][0]["targets"] == ["caffe2"]
    usage = invoke("model.py", "--static-only", "--target", "caffe2,nosuch", cwd=tmp_path)
    assert usage.exit_code == 2 and "unknown target 'nosuch'" in usage.output


def test_json_paths_are_as_given(tmp_path):
    (tmp_path / "pkg").mkdir()
    write(tmp_path / "pkg", "model.py", ERROR)
    doc = json.loads(invoke("./pkg", "--format", "json", cwd=tmp_path).stdout)
    assert [f["path"] for f in doc["findings"]] == [str(Path("./pkg") / "model.py")]
    absolute = str(tmp_path / "pkg" / "model.py")
    doc = json.loads(invoke(absolute, "--format", "json").stdout)
    assert [f["path"] for f in doc["findings"]] == [absolute]


def test_text_format_for_pipes_has_the_line_underlined_and_no_colour(tmp_path):
    path = write(tmp_path, "model.py", ERROR)
    for args in ([], ["--format", "text"]):  # not a terminal: text is the default
        result = invoke(str(path), *args)
        assert "\x1b[" not in result.stdout
        lines = result.stdout.splitlines()
        head = next(line for line in lines if "MC201" in line)
        assert head.startswith(f"{path}:7:19: MC201")
        source_line, carets = lines[lines.index(head) + 1: lines.index(head) + 3]
        assert source_line.strip() == "self.up = nn.Upsample(scale_factor=2,"
        assert carets.strip() and set(carets.strip()) == {"^"}
        assert "1 finding(s) in 1 file(s)" in result.stdout


def test_explain_an_unknown_code_is_a_usage_error():
    unknown = CliRunner().invoke(app, ["--explain", "MC999"])
    assert unknown.exit_code == 2
    assert "unknown rule code" in unknown.stderr


def test_syntax_error_is_reported_and_the_other_files_still_checked(tmp_path):
    write(tmp_path, "broken.py", "import torch\n\nx = (1,\n")
    write(tmp_path, "model.py", ERROR)
    result = invoke(str(tmp_path), "--format", "json")
    doc = json.loads(result.stdout)
    found = sorted((Path(f["path"]).name, f["code"], f["line"]) for f in doc["findings"])
    assert found[0][:2] == ("broken.py", "MC000")
    assert found[1] == ("model.py", "MC201", 7)
    assert result.exit_code == 1


def test_missing_path_is_a_one_line_usage_error(tmp_path):
    result = invoke(str(tmp_path / "nope.py"))
    assert result.exit_code == 2
    assert result.stdout == ""
    missing = tmp_path / "nope.py"
    assert result.stderr.strip().splitlines() == [f"modelcheck: error: {missing}: no such file or directory"]


def test_undecodable_and_binary_files_are_skipped_with_a_note(tmp_path):
    (tmp_path / "latin1.py").write_bytes("# d\xe9j\xe0 vu\nimport torch\n".encode("latin-1"))
    (tmp_path / "blob.py").write_bytes(bytes(range(256)))
    result = invoke(str(tmp_path))
    assert result.exit_code == 0
    assert "latin1.py: skipped, not UTF-8" in result.stdout
    assert "blob.py: skipped, binary file" in result.stdout
    assert "Traceback" not in result.output


def test_empty_folder_says_there_is_nothing_to_check(tmp_path):
    result = invoke(str(tmp_path))
    assert result.exit_code == 0
    assert "no Python files to check" in result.stdout


def test_installed_script_runs_as_a_real_process():
    """The console script pip installed, in a fresh process, on the fixtures."""
    script = Path(sys.executable).with_name("modelcheck")
    assert script.exists(), script
    files = [str(FIXTURES / "pooling.py"), str(FIXTURES / "upsampling_fine.py")]
    proc = subprocess.run([str(script), "--static-only", "--format", "json", *files],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # MC301 warnings only at caffe2/opset 9
    doc = json.loads(proc.stdout)
    assert doc["summary"]["files"] == 2
    assert {f["code"] for f in doc["findings"]} == {"MC301"}
    proc = subprocess.run([str(script), "--static-only", str(FIXTURES / "upsampling_flagged.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "MC201" in proc.stdout and "\x1b[" not in proc.stdout


@pytest.mark.parametrize(
    "options",
    [["--format", "json"], ["--format", "text"], ["--format", "rich"],
     pytest.param(["--format", "sarif"], marks=pytest.mark.slow),  # sarif plans fixes: ~8 s
     pytest.param(["--format", "text", "--diff"], marks=pytest.mark.slow)],  # the fix planner and differ
    ids=["json", "text", "rich", "sarif", "diff"],
)
def test_static_only_never_imports_torch(options):
    """The pre-commit path: the whole run, rules, fix planning and reporting included, without torch."""
    files = [str(path) for path in sorted(FIXTURES.glob("*.py"))]
    code = (
        "import sys\n"
        "from modelcheck.cli.main import main\n"
        f"sys.argv = ['modelcheck', '--static-only', *{options!r}, *{files!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 1, exit.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'numpy'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "sys.exit(3 if heavy else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 0
