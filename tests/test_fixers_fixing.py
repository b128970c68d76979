"""--fix/--diff orchestration: atomic writes, never worse, --diff output, verification and rollback."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import libcst as cst
import pytest
from modelcheck.fix.run import FilePlan, rebuild, write_atomic
from modelcheck.fixers.base import ApplyError, Edit, apply_edits, replace_with
from modelcheck.static.source import SourceFile

MODELCHECK = Path(sys.executable).with_name("modelcheck")
FIXTURES = Path(__file__).parent / "fixtures" / "fixers"

LAMBDA_NET = '''import torch.nn as nn


class Wrap(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.act = Wrap(lambda x: x * 2)

    def forward(self, x):
        return self.act(self.conv(x))
'''


def modelcheck(folder: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELCHECK), *args], cwd=folder, capture_output=True, text=True, timeout=timeout)


def test_write_atomic_replaces_the_file_keeps_mode_and_follows_links(tmp_path):
    target = tmp_path / "model.py"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "link.py"
    link.symlink_to(target)
    inode = target.stat().st_ino
    write_atomic(str(link), b"new\n")
    assert target.read_bytes() == b"new\n" and link.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != inode  # a rename, not a rewrite in place: readers never see half a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.py", "model.py"]  # no temporary left


def test_output_that_does_not_parse_is_never_produced(tmp_path):
    source = SourceFile.parse("m.py", "x = f(1)\n")
    call = source.module.body[0].body[0].value
    bad = Edit("MC101", 1, "bogus", rewrites=((id(call), replace_with(cst.Name("class"))),), anchors=(call,))
    with pytest.raises(ApplyError, match="would not parse"):
        apply_edits(source, [bad])
    plan = FilePlan("m.py", b"x = f(1)\n", "x = f(1)\n", source=source, chosen=[bad])
    rebuild(plan)
    assert not plan.changed and "would not parse" in plan.error


def test_diff_prints_what_fix_writes_and_writes_nothing(tmp_path):
    original = (FIXTURES / "lambdas_before.py").read_text()
    (tmp_path / "model.py").write_text(original)
    result = modelcheck(tmp_path, "model.py", "--static-only", "--diff", "--format", "text")
    assert result.returncode == 1, result.stderr  # the findings are still there: nothing was fixed
    assert result.stdout.startswith("--- a/model.py\n+++ b/model.py\n@@ ")
    assert (tmp_path / "model.py").read_text() == original
    assert "note: --diff: 7 fix(es) would be applied; nothing was written" in result.stdout
    patch_text = result.stdout[: result.stdout.index("\nnote: ")] + "\n"
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.py").write_text(original)
    subprocess.run(["patch", "-p1", "-s"], input=patch_text, text=True, cwd=copy, check=True)
    fixed = modelcheck(tmp_path, "model.py", "--static-only", "--fix", "--format", "json")
    assert (copy / "model.py").read_text() == (tmp_path / "model.py").read_text() != original
    report = json.loads(fixed.stdout)
    assert {f["status"] for f in report["fixes"]} == {"applied"} and report["diff"] == ""
    assert {tuple(sorted(f)) for f in report["fixes"]} == {
        ("code", "line", "path", "reason", "safety", "status", "summary", "verified")}


def test_second_fix_changes_nothing_and_says_so(tmp_path):
    path = tmp_path / "model.py"
    path.write_text((FIXTURES / "lambdas_before.py").read_text())
    modelcheck(tmp_path, "model.py", "--static-only", "--fix")
    once = path.read_bytes()
    result = modelcheck(tmp_path, "model.py", "--static-only", "--fix", "--format", "text")
    assert result.returncode == 0 and path.read_bytes() == once
    assert "note: nothing to fix" in result.stdout


def test_static_only_fix_applies_exact_fixes_and_says_nothing_was_verified(tmp_path):
    path = tmp_path / "up.py"
    path.write_text((FIXTURES / "upsampling_before.py").read_text())
    report = json.loads(modelcheck(tmp_path, "up.py", "--static-only", "--fix", "--format", "json").stdout)
    status = {(f["code"], f["line"]): f["status"] for f in report["fixes"]}
    assert status[("MC205", 15)] == "applied" and status[("MC205", 16)] == "applied"  # exact renames
    assert status[("MC201", 10)] == "held_back"  # needs a model to verify it on
    waiting = sum(1 for f in report["fixes"] if f["status"] == "held_back" and not f["reason"].startswith("unsafe"))
    assert waiting and any(note.startswith("nothing was verified") and f"{waiting} that need verifying were held back"
                           in note for note in report["notes"])
    assert "_ExactBilinearUpsample" not in path.read_text()


def test_read_only_file_is_a_one_line_error_and_nothing_is_written(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(LAMBDA_NET)
    path.chmod(0o444)
    result = modelcheck(tmp_path, "model.py", "--static-only", "--fix")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "modelcheck: error: model.py: cannot write the fix: the file is read-only; nothing was written"]
    assert path.read_text() == LAMBDA_NET


def test_a_file_with_a_syntax_error_is_never_touched(tmp_path):
    text = "import torch.nn as nn\nnet = nn.Sequential(Wrap(lambda x: x)\n"
    (tmp_path / "broken.py").write_text(text)
    report = json.loads(modelcheck(tmp_path, "broken.py", "--static-only", "--fix", "--format", "json").stdout)
    assert (tmp_path / "broken.py").read_text() == text
    assert [(f["code"], f["status"]) for f in report["fixes"]] == [("MC000", "not_fixable")]
    assert "syntax error" in report["fixes"][0]["reason"]


def test_byte_order_mark_and_crlf_line_ends_are_kept(tmp_path):
    path = tmp_path / "model.py"
    path.write_bytes(b"\xef\xbb\xbf" + LAMBDA_NET.replace("\n", "\r\n").encode())
    modelcheck(tmp_path, "model.py", "--static-only", "--fix")
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"def _lambda_17(x):\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_a_coding_cookie_file_is_fixed_in_its_own_encoding(tmp_path):
    """Found by fuzzing: --diff and --fix decoded every file as UTF-8 again, and a latin-1 file
    (PEP 263 cookie) crashed them with a UnicodeDecodeError traceback."""
    path = tmp_path / "model.py"
    path.write_bytes(("# -*- coding: latin-1 -*-\n# café\n" + LAMBDA_NET).encode("latin-1"))
    result = modelcheck(tmp_path, "model.py", "--static-only", "--fix")
    assert "Traceback" not in result.stderr, result.stderr
    data = path.read_bytes()
    assert b"# caf\xe9\n" in data and b"def _lambda_19(x):\n" in data
    fixed = data.decode("latin-1")
    assert modelcheck(tmp_path, "model.py", "--static-only", "--fix").returncode == 0
    assert path.read_bytes().decode("latin-1") == fixed

@pytest.mark.slow
def test_verified_fix_is_rolled_back_byte_for_byte_when_outputs_change(tmp_path):
    """A genuine failure: the model's own code treats lambdas specially, so lifting changes it."""
    text = LAMBDA_NET.replace(
        "        return self.fn(x)\n",
        "        if self.fn.__name__ == '<lambda>':  # some converted code special-cases lambdas\n"
        "            return self.fn(x) + 1\n"
        "        return self.fn(x)\n", 1)
    path = tmp_path / "net.py"
    path.write_text(text)
    path.chmod(0o600)
    result = modelcheck(tmp_path, "net.py", "--model", "net.py:Net", "--input-shape", "1,3,5,5", "--fix",
                        "--no-smoke", "--format", "json")
    report = json.loads(result.stdout)
    assert path.read_text() == text and stat.S_IMODE(path.stat().st_mode) == 0o600
    (fix,) = [f for f in report["fixes"] if f["code"] == "MC101"]
    assert fix["status"] == "rolled_back" and "not bit-identical" in fix["reason"]
    assert any(re.match(r"rolled back: net\.py:\d+ MC101: verification failed", n) for n in report["notes"])
    assert [f["code"] for f in report["findings"]] == ["MC101"]  # still reported: it is still there


@pytest.mark.slow
def test_a_failing_family_is_rolled_back_and_the_others_kept(tmp_path):
    """The upsampling fix breaks code that reads nn.Upsample's attributes; the lambda fix stays."""
    text = LAMBDA_NET.replace(
        "        self.act = Wrap(lambda x: x * 2)\n",
        "        self.act = Wrap(lambda x: x * 2)\n"
        "        self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)\n").replace(
        "        return self.act(self.conv(x))\n",
        "        assert self.up.mode == 'bilinear'\n        return self.up(self.act(self.conv(x)))\n")
    path = tmp_path / "net.py"
    path.write_text(text)
    result = modelcheck(tmp_path, "net.py", "--model", "net.py:Net", "--input-shape", "1,3,6,6", "--fix",
                        "--no-smoke", "--format", "json")
    report = json.loads(result.stdout)
    status = {f["code"]: f for f in report["fixes"]}
    assert status["MC101"]["status"] == "applied" and status["MC101"]["verified"]
    assert status["MC201"]["status"] == "rolled_back" and "AttributeError" in status["MC201"]["reason"]
    fixed = path.read_text()
    assert "Wrap(_lambda_" in fixed and "nn.Upsample(scale_factor=2" in fixed
    assert "_ExactBilinearUpsample" not in fixed
    assert [f["code"] for f in report["findings"]] == ["MC201"]
    assert report["models"][0]["pickle"]["ok"] is True  # torch.save(model) works after the kept fix


def test_fix_and_diff_exclude_each_other(tmp_path):
    (tmp_path / "model.py").write_text(LAMBDA_NET)
    result = modelcheck(tmp_path, "model.py", "--fix", "--diff")
    assert result.returncode == 2 and "exclude each other" in result.stderr


def test_the_fix_module_never_needs_torch():
    code = "import sys, modelcheck.fix.run, modelcheck.fixers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "False"


def test_an_interrupted_verification_restores_every_file(tmp_path):
    """Ctrl-C while the fixed files wait for verification leaves them as they were."""
    from modelcheck.config import Config
    from modelcheck.findings import Report
    from modelcheck.fix.run import fix_step
    from modelcheck.fixers.base import FixContext
    from modelcheck.static.run import check_source
    from modelcheck.targets import make_target

    path = tmp_path / "net.py"
    path.write_text(LAMBDA_NET)
    report = Report("caffe2", 9, findings=check_source(str(path), LAMBDA_NET, make_target("caffe2"), Config()))
    seen = []

    def interrupted(changed, materialize):
        seen.append(path.read_text())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fix_step(report, {str(path): LAMBDA_NET}, FixContext("caffe2", 9), write=True, unsafe=False,
                 covered=lambda _path: True, verifier=interrupted)
    assert seen and "_lambda_" in seen[0]  # it was written, then
    assert path.read_text() == LAMBDA_NET  # restored


@pytest.mark.slow
def test_fix_reaches_the_project_files_the_model_is_built_from(tmp_path):
    """The lambdas live in a Lua-converted backbone that model.py imports: the dynamic pass points
    at it, the static pass checks it then, and --diff/--fix treat it like a file given by name."""
    import shutil

    project = tmp_path / "project"
    shutil.copytree(Path(__file__).parent / "fixtures" / "fix_reach", project)
    backbone, model = project / "backbone" / "lua_net.py", project / "model.py"
    original = {path: path.read_bytes() for path in (backbone, model)}
    lambda_lines = [n for n, line in enumerate(backbone.read_text().splitlines(), 1) if "(lambda " in line]
    args = ("model.py", "--model", "model.py:Net", "--input-shape", "1,3,16,16", "--no-smoke", "--format", "json")

    report = json.loads(modelcheck(project, *args, "--diff").stdout)
    assert report["diff"].count("--- a/") == 2
    assert "--- a/backbone/lua_net.py\n+++ b/backbone/lua_net.py\n" in report["diff"]
    assert "--- a/model.py\n+++ b/model.py\n" in report["diff"]
    assert {path: path.read_bytes() for path in original} == original  # --diff writes nothing
    lambdas = [f for f in report["findings"] if f["code"] == "MC101"]
    assert [(f["path"], f["line"]) for f in lambdas] == [("backbone/lua_net.py", n) for n in lambda_lines]
    assert len(lambda_lines) == 6 and all(f["evidence"] == "both" and f["fixable"] for f in lambdas)
    also = next(note for note in report["notes"] if note.startswith("also checked, as files the model is built from:"))
    assert "backbone/lua_net.py" in also.split(": ", 1)[1].split(", "), also  # the backbone (and its package)
    assert (report["summary"]["files"], report["summary"]["also_checked"]) == (
        3, ["backbone/__init__.py", "backbone/lua_net.py"])

    result = modelcheck(project, *args, "--fix")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fixes = [(f["path"], f["code"], f["status"], f["verified"]) for f in report["fixes"]]
    assert fixes == [("backbone/lua_net.py", "MC101", "applied", True)] * 6 + [("model.py", "MC201", "applied", True)]
    assert report["findings"] == [] and report["models"][0]["pickle"]["ok"] is True
    assert any(n.startswith("fix verification: model.py:Net: the original state_dict loads with strict=True")
               for n in report["notes"])
    assert "(lambda " not in backbone.read_text()  # not one lambda left in the module-level net
    assert "_ExactBilinearUpsample" in model.read_text()

    save = ("import io, torch\nfrom model import Net\ntorch.save(Net(), io.BytesIO())\n"
            "import backbone.lua_net as b\ntorch.save(b.net, io.BytesIO())\nprint('saved')\n")
    done = subprocess.run([sys.executable, "-c", save], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "saved", done.stderr

    fixed = {path: path.read_bytes() for path in original}
    again = json.loads(modelcheck(project, *args, "--fix").stdout)
    assert {path: path.read_bytes() for path in original} == fixed
    assert "nothing to fix" in again["notes"] and again["findings"] == []
