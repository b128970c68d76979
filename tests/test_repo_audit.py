"""Acceptance: an R3Net-style repository, audited exactly as cloned (tests/fixtures/repos/salnet2018).

The fixture is written here in the style of 2018 research code (none of it copied): a package
``backbone/`` whose ``__init__`` and modules use Python 2 implicit relative imports (and a
``config`` module that a top-level ``config.py`` would shadow), a Lua-converted backbone with
lambdas whose constructor loads a weights file that is not there, ``in_dim / 2`` as a layer
size, a torchvision VGG with ``pretrained=True`` plus a ``model_zoo.load_url``, module-level
imports of packages that are not installed, a model whose constructor arguments and non-tensor
``forward`` argument only ``test.py`` knows, a two-input model, building blocks with two-tensor
forwards, and a training script in Python 2 syntax. Every root architecture must be built,
traced, pickle-probed and exported, with real torch, torchvision, ONNX Runtime and Caffe2.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_caffe2
from modelcheck.audit.run import AuditRow

pytestmark = pytest.mark.slow

REPO = Path(__file__).parent / "fixtures" / "repos" / "salnet2018"
ROOTS = {"model.py:SalNet", "vgg_model.py:VggSal", "rcl.py:RCLNet", "rgbd.py:RGBDNet"}


def _audit(tmp_path: Path, *args: str) -> dict:
    repo = tmp_path / "salnet2018"
    if not repo.exists():
        shutil.copytree(REPO, repo)
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "audit", ".", "--no-cache", "--format", "json", "--jobs", "2",
         "--input-shape", "1,3,64,64", "--timeout", "300", *args],
        cwd=repo, capture_output=True, text=True, env=env, timeout=1800,
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    return json.loads(done.stdout)


def _notes(row: dict) -> str:
    return "\n".join(row["notes"])


def test_every_root_architecture_of_the_repo_reaches_export_without_edits(tmp_path: Path) -> None:
    require_caffe2()
    for package in ("matplotlib", "tensorboardX"):  # the stubs are what lets vgg_model.py import
        assert importlib.util.find_spec(package) is None, f"{package} is installed: the fixture no longer tests stubs"
    before = {p: p.read_bytes() for p in REPO.rglob("*.py")}
    data = _audit(tmp_path)
    rows = {row["model"]: row for row in data["models"]}

    # root architectures only; their building blocks are left out with a note
    assert set(rows) == ROOTS, sorted(rows)
    notes = "\n".join(data["notes"])
    assert "ResNetLua" in notes and "--all-modules" in notes, notes

    # every single-input root is built, traced and exported: each has a verdict from each runtime
    for name in ("model.py:SalNet", "vgg_model.py:VggSal", "rcl.py:RCLNet"):
        row = rows[name]
        assert row["status"] == "ok", (name, row["status"], row["detail"])
        stages = {s["name"]: s["status"] for s in row["stages"]}
        assert stages.get("export") in ("passed", "failed"), (name, stages)
        assert row["pickle"] is not None, name

    salnet = rows["model.py:SalNet"]
    text = _notes(salnet)
    assert "resnet_lua_18.pth" in text and "resnet_lua.py:11" in text, text  # the skipped load, where
    assert "MC401" in text and "MC402" in text, text  # ported in memory, never on disk
    assert not salnet["pickle"]["ok"]  # the backbone's lambdas, found by really pickling
    codes = {f["code"] for f in salnet["findings"]}
    assert {"MC101", "MC401", "MC402"} <= codes, codes
    assert "MC202" not in codes  # VggSal's align_corners=True is in another file: not SalNet's

    vgg = rows["vgg_model.py:VggSal"]
    text = _notes(vgg)
    assert "matplotlib" in text and "tensorboardX" in text, text
    assert "vgg_model.py:15" in text and "vgg_model.py:18" in text, text  # vgg16_bn(pretrained=True), load_url
    assert vgg["network"] == [], vgg["network"]  # built offline: nothing downloaded, nothing tried

    rcl = rows["rcl.py:RCLNet"]
    assert "test.py:12" in _notes(rcl), _notes(rcl)  # RCLNet(RCLBlock, 3) and net(img, 'test')

    # a root that needs two inputs and was given one shape is not a failure of the repo
    rgbd = rows["rgbd.py:RGBDNet"]
    assert rgbd["status"] == "skipped" and "2 inputs" in rgbd["detail"], rgbd
    assert not AuditRow.from_json(rgbd).bad  # not counted in "would break"

    # nothing in the repo was written
    assert {p: p.read_bytes() for p in REPO.rglob("*.py")} == before


def test_two_input_root_with_its_shapes_reaches_every_runtime(tmp_path: Path) -> None:
    require_caffe2()
    data = _audit(tmp_path, "--model", "rgbd.py:RGBDNet", "--input-shape", "1,3,32,32;1,1,32,32")
    (row,) = data["models"]
    stages = {s["name"]: s["status"] for s in row["stages"]}
    assert row["status"] == "ok", row["detail"]
    assert stages == {"export": "passed", "onnx_check": "passed", "onnxruntime": "passed", "caffe2": "passed"}, stages
