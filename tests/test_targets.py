"""Target profiles: each runtime is one module of ``modelcheck.targets``, found without a list.

What a user relies on: ``--target caffe2`` and ``--target onnx`` mean what they always meant
(defaults, refused combinations and their messages), a new target is a module dropped into the
package, the pre-commit path's import of the package never pays for torch, and
``modelcheck --install TARGET`` installs (or says there is nothing to install).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import modelcheck.targets as targets
import pytest
from conftest import require_caffe2
from modelcheck.targets import (
    DEFAULT_OPSET,
    PROFILES,
    STAGES,
    TARGET_NAMES,
    Profile,
    Target,
    TargetError,
    discover,
    make_target,
    make_targets,
    stage_order,
)

MODELCHECK = [sys.executable, "-m", "modelcheck"]

#: a profile module as a new target would write it: stages and checks are plain functions
FAKE_TARGET = '''\
from modelcheck.targets import DoctorRun, Profile, RuntimeStatus, Stage
from modelcheck.targets.onnx import ONNX_CHECK


def run_fakert(ctx):
    return ctx.outcome("fakert", "passed", detail="ran")


PROFILE = Profile(
    name="{name}", runtime="fakert", runtime_label="FakeRT", default_opset=13,
    stages=(ONNX_CHECK, Stage("fakert", "FakeRT", run_fakert, after=("onnx_check",))),
    status=lambda home: RuntimeStatus(True, "fakert 1.0"),
    doctor=lambda path, feeds, timeout: DoctorRun(None, "not built"),
    artifacts=("model.fake",),
)
'''


def _package(root: Path, name: str, modules: dict[str, str]) -> Path:
    """A real package on disk: ``root/name/__init__.py`` plus one file per module."""
    folder = root / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, text in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(text))
    return folder


# ----------------------------------------------------------------------------- discovery


def test_discovery_finds_every_target_module() -> None:
    folder = Path(targets.__file__).parent
    modules = sorted(p.stem.replace("_", "-") for p in folder.glob("*.py") if p.stem != "__init__")
    assert list(TARGET_NAMES) == modules  # one module per target, nothing listed by hand
    assert all(isinstance(profile, Profile) for profile in PROFILES.values())
    assert (PROFILES["caffe2"].runtime, PROFILES["onnx"].runtime) == ("caffe2", "onnxruntime")
    assert list(discover(targets)) == list(TARGET_NAMES)  # found again, the same way
    assert STAGES[:4] == ("export", "onnx_check", "onnxruntime", "caffe2")
    assert PROFILES["onnx"].stage_names() == ("onnx_check", "onnxruntime")
    assert PROFILES["caffe2"].stage_names() == ("onnx_check", "onnxruntime", "caffe2")
    assert PROFILES["caffe2"].install is not None and PROFILES["onnx"].install is None
    assert dict(PROFILES["caffe2"].export_options) == {"keep_initializers_as_inputs": True}


def test_every_stage_waits_only_for_stages_before_it() -> None:
    """``after`` names a stage the same profile runs earlier, or the stage could never be blocked."""
    for profile in PROFILES.values():
        names = profile.stage_names()
        assert len(set(names)) == len(names), profile.name
        for index, stage in enumerate(profile.stages):
            assert set(stage.after) <= set(names[:index]), (profile.name, stage.name)


def test_a_target_module_in_a_package_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropped into a package, a module with a PROFILE is a target; a helper module without one is not."""
    _package(tmp_path, "mc_more_targets", {"fakert": FAKE_TARGET.format(name="fakert"),
                                           "helpers": "VALUE = 1\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    package = importlib.import_module("mc_more_targets")
    found = discover(package)
    assert list(found) == ["fakert"]
    assert found["fakert"].stage_names() == ("onnx_check", "fakert")
    # its stage joins the report's stages after the ones already known, each stage once
    assert stage_order([*PROFILES.values(), found["fakert"]]) == (*STAGES, "fakert")


def test_a_module_dropped_into_modelcheck_targets_is_found(tmp_path: Path) -> None:
    """A file beside caffe2.py and onnx.py (here: a folder on the package's path) joins them."""
    (tmp_path / "fakert.py").write_text(FAKE_TARGET.format(name="fakert"))
    code = ("import modelcheck.targets as t\n"
            f"t.__path__.append({str(tmp_path)!r})\n"
            "print(sorted(t.discover(t)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted([*TARGET_NAMES, "fakert"]))


@pytest.mark.parametrize(("package", "text", "error"), [
    ("mc_bad_targets_1", "PROFILE = 'caffe2'\n", "not a modelcheck.targets.Profile"),
    ("mc_bad_targets_2", FAKE_TARGET.format(name="onnx"), "defines the target 'onnx' a second time"),
])
def test_a_bad_profile_module_is_refused_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str,
                                                  text: str, error: str) -> None:
    """A PROFILE that is not one, or a second module for a known name, stops discovery with its module named."""
    _package(tmp_path, package, {"a_onnx": "from modelcheck.targets.onnx import PROFILE\n", "b_bad": text})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=error):
        discover(importlib.import_module(package))


def test_importing_the_targets_never_imports_torch() -> None:
    """The --static-only pre-commit path imports every profile module: none may load a runtime."""
    code = ("import sys, modelcheck.targets\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnx', 'onnxruntime', 'numpy', 'caffe2')))\n"
            "print(sorted(m for m in sys.modules if m.startswith('modelcheck.targets.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, loaded = out.stdout.strip().splitlines()
    assert heavy == "[]"
    assert {"modelcheck.targets.caffe2", "modelcheck.targets.onnx"} <= set(ast.literal_eval(loaded))


# ----------------------------------------------------------------------------- make_target


def test_make_target_fills_in_each_profiles_defaults() -> None:
    assert (DEFAULT_OPSET["caffe2"], DEFAULT_OPSET["onnx"]) == (9, 17)
    assert all(DEFAULT_OPSET[name] == 0 for name, profile in PROFILES.items() if not profile.onnx)
    assert make_target() == Target("caffe2", 9, "torchscript")
    assert make_target("onnx") == Target("onnx", 17, "torchscript")
    assert make_target("onnx", exporter="dynamo") == Target("onnx", 18, "dynamo")
    assert make_target("caffe2", 11).label == "caffe2 (opset 11, torchscript exporter)"
    assert make_target("onnx").runtime == "onnxruntime" and make_target("caffe2").runtime == "caffe2"


@pytest.mark.parametrize(("args", "message"), [
    (("tflite",), f"unknown target 'tflite'; choose one of {', '.join(TARGET_NAMES)}"),
    (("onnx", None, "jit"), "unknown exporter 'jit'; choose one of torchscript, dynamo"),
    (("caffe2", None, "dynamo"), "the caffe2 target needs the torchscript exporter (keep_initializers_as_inputs)"),
    (("onnx", 6), "opset 6 is outside what torch.onnx exports (7-23)"),
    (("caffe2", 24), "opset 24 is outside what torch.onnx exports (7-23)"),
    (("onnx", 17, "dynamo"), "the dynamo exporter needs opset >= 18, not 17"),
])
def test_make_target_refuses_what_cannot_be_honoured(args: tuple, message: str) -> None:
    with pytest.raises(TargetError) as info:
        make_target(*args)
    assert str(info.value) == message


# ----------------------------------------------------------------------------- runtimes


def test_the_onnx_runtime_status_comes_from_the_installed_package() -> None:
    status = PROFILES["onnx"].status(None)
    assert status.installed and status.version == metadata.version("onnxruntime")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MODELCHECK, *args], capture_output=True, text=True, timeout=120)


def test_install_onnx_has_nothing_to_install() -> None:
    result = _cli("--install", "onnx")
    assert result.returncode == 0, result.stderr
    assert "the onnx target has nothing to install" in result.stdout


def test_install_of_an_unknown_target_is_a_usage_error() -> None:
    result = _cli("--install", "tflite")
    assert result.returncode == 2
    assert f"unknown target 'tflite'; choose one of {', '.join(TARGET_NAMES)}" in result.stderr
    result = _cli("--install", "onnx", "--install-caffe2")
    assert result.returncode == 2 and "install one at a time" in result.stderr


@pytest.mark.caffe2
def test_install_caffe2_again_only_reports_it(tmp_path: Path) -> None:
    """Idempotent: an installed runtime is reported, under both spellings, and nothing is rebuilt."""
    require_caffe2()
    for args in (("--install", "caffe2"), ("--install-caffe2",)):
        result = _cli(*args)
        assert result.returncode == 0, result.stderr
        assert "already installed" in result.stderr
        assert result.stdout.startswith("Caffe2 runtime ready: caffe2 (torch 1.7.1)")


@pytest.mark.slow
def test_the_doctor_has_a_row_for_every_target() -> None:
    """One row per profile's runtime, named after it and its target, besides torch and onnx."""
    from modelcheck.doctor import diagnose

    checks = {check.name: check for check in diagnose()}
    assert list(checks) == ["torch", "onnx", *(profile.runtime for profile in PROFILES.values())]
    for name, profile in PROFILES.items():
        check = checks[profile.runtime]
        assert check.target == name
        if not profile.status(None).installed:
            assert not check.works and check.fix == profile.install_hint
        elif check.works:  # ran and compared, or (Core ML off macOS) converted with the reason it did not run
            assert "one-conv model: max abs diff to PyTorch" in check.detail or "not run:" in check.detail
        else:  # installed but broken (or, for Caffe2, not run as root): the remedy is named
            assert check.fix, check.detail


# ----------------------------------------------------------------------------- several targets


def test_several_targets_each_keep_their_own_settings() -> None:
    both = make_targets(["caffe2,onnx", "caffe2"], opset=None)
    assert [t.label for t in both.members] == ["caffe2 (opset 9, torchscript exporter)",
                                               "onnx (opset 17, torchscript exporter)"]
    assert (both.name, both.opset) == ("caffe2", 9)  # the primary answers for code that needs one target
    mixed = make_targets(["onnx", "executorch"], opset=13)
    assert [(t.name, t.opset, t.onnx) for t in mixed.members] == [("onnx", 13, True), ("executorch", 0, False)]
    with pytest.raises(TargetError, match="executorch exports no ONNX"):
        make_targets(["executorch"], opset=11)
    with pytest.raises(TargetError, match="does not export ONNX"):
        make_target("executorch", 11)


def test_a_rule_weighs_every_target_of_a_set() -> None:
    """MC301 (ceil_mode): an error at caffe2@11, a warning at onnx@9, nothing at onnx@17 or executorch."""
    from modelcheck.rules import RULES_BY_CODE
    from modelcheck.rules.base import matches_for
    from modelcheck.rules.pooling import PoolFacts

    rule = RULES_BY_CODE["MC301"]
    facts = next(f for _, f in _pool_facts())
    assert isinstance(facts, PoolFacts)
    [(_, match, severity)] = matches_for([rule], facts, make_targets(["onnx,executorch,caffe2"], opset=11))
    assert (severity.value, match.targets) == ("error", ("caffe2",))
    [(_, match, severity)] = matches_for([rule], facts, make_targets(["onnx", "executorch"], opset=9))
    assert (severity.value, match.targets) == ("warning", ("onnx",))
    assert list(matches_for([rule], facts, make_targets(["onnx", "executorch"]))) == []


def _pool_facts():
    from modelcheck.rules import FAMILIES
    from modelcheck.static.source import SourceFile

    family = next(f for f in FAMILIES if f.name == "pooling")
    text = "import torch.nn as nn\npool = nn.MaxPool2d(3, 2, ceil_mode=True)\n"
    return list(family.extract(SourceFile.parse("net.py", text)))
