"""modelcheck.building: third-party code builds as cloned (weights skipped, ported in memory, stubs).

The fast tests exercise the sentinel and stub objects in this process (no torch, nothing
installed here). The slow ones run the real child jobs on fixture repositories written in the
style of 2018 research code (tests/fixtures/building/), offline, with real torch/torchvision/timm.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modelcheck import building
from modelcheck.building import SkippedWeights, Stub, StubModule

FIXTURES = Path(__file__).parent / "fixtures" / "building"
#: names no environment has: the fixtures import them at module level
SURELY_MISSING = "nonexistent_viz_toolkit_2018"


# ----- fast: the sentinel and the stubs -----------------------------------------------------------


def test_skipped_weights_is_a_forgiving_empty_state_dict():
    ckpt = SkippedWeights("torch.load('resnext_101_32x4d.pth')", "resnext/resnext101.py:11")
    assert ckpt == {} and not ckpt and list(ckpt) == []
    state = ckpt["state_dict"]
    assert isinstance(state, SkippedWeights) and state == {}
    assert {k: v for k, v in state.items() if k in {"fc.weight": 1}} == {}
    del ckpt["fc.weight"]  # missing: tolerated
    assert isinstance(ckpt.pop("fc.bias"), SkippedWeights)
    assert ckpt.pop("fc.bias", 3) == 3
    assert ckpt.get("epoch", 0) == 0 and isinstance(ckpt.get("epoch"), SkippedWeights)
    ckpt["real"] = 1  # what the code puts in stays
    assert ckpt["real"] == 1 and ckpt.get("real") == 1 and ckpt.pop("real") == 1
    assert "state_dict" not in ckpt
    assert getattr(ckpt, "_metadata", None) is None  # what load_state_dict asks of any dict


def test_skipped_weights_used_as_a_model_says_the_file_is_missing():
    model = SkippedWeights("torch.load('whole_model.pth')", "train.py:9")
    with pytest.raises(AttributeError, match=r"torch.load\('whole_model.pth'\) at train.py:9 was skipped.*\.eval"):
        model.eval()


def test_stub_lookups_give_stubs_and_uses_raise_module_not_found():
    plt = Stub("matplotlib is not installed", "matplotlib.pyplot")
    figure = plt.figure
    assert isinstance(figure, Stub) and isinstance(plt.cm["jet"], Stub)
    plt.rcParams["font.size"] = 12  # configuration: tolerated
    uses = [
        lambda: figure(),
        lambda: list(plt),
        lambda: bool(plt),
        lambda: f"{plt}",
        lambda: str(plt),
        lambda: plt + 1,
        lambda: 2 * plt,
        lambda: len(plt),
        lambda: isinstance(1, plt),
        lambda: os.fspath(plt),
    ]
    for use in uses:
        with pytest.raises(ModuleNotFoundError) as info:
            use()
        assert "matplotlib is not installed: modelcheck stubbed it so the model could be imported" in str(info.value)
        assert info.value.name == "matplotlib"
    with pytest.raises(ModuleNotFoundError, match=r"matplotlib.pyplot.figure \(called\) was used"):
        figure()
    assert "matplotlib.pyplot" in repr(plt)  # repr never raises: error messages show stubs


def test_a_class_deriving_from_a_stub_fails_only_when_instantiated():
    writer = Stub("tensorboardX is not installed", "tensorboardX.SummaryWriter")

    class Logger(writer):  # defined at import time: must not fail the import
        pass

    with pytest.raises(ModuleNotFoundError, match="tensorboardX is not installed"):
        Logger("runs")


def test_stub_module_attributes_are_stubs():
    module = StubModule("tensorboardX", "tensorboardX is not installed")
    assert isinstance(module.SummaryWriter, Stub)
    with pytest.raises(AttributeError):
        module.__wrapped__  # noqa: B018 - protocols see no such attribute


def test_imports_under_try_except_importerror_are_not_stubbed(tmp_path):
    source = tmp_path / "utils.py"
    source.write_text(
        "import os\n"
        "try:\n"
        "    import apex\n"
        "    HAS_APEX = True\n"
        "except ImportError:\n"
        "    HAS_APEX = False\n"
        "try:\n"
        "    import visdom\n"
        "except (ValueError, ModuleNotFoundError):\n"
        "    pass\n"
        "try:\n"
        "    import cv2\n"
        "finally:\n"
        "    pass\n"
        "import matplotlib\n"
    )
    guarded = building._guarded_lines(str(source))
    assert {3, 4, 8} <= guarded
    assert not {1, 12, 15} & guarded


def test_surely_missing_names_are_missing():
    assert importlib.util.find_spec(SURELY_MISSING) is None


# ----- slow: real child jobs on the fixtures -------------------------------------------------------


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def inspect(tmp_path: Path, path: Path, name: str, **spec_fields) -> tuple[dict, Path]:
    """The inspect job on ``path:name``, offline (network guarded and logged, hubs offline)."""
    from modelcheck.audit import offline_env
    from modelcheck.isolation import run_job
    from modelcheck.specs import ModelSpec

    env = offline_env(tmp_path)
    spec = ModelSpec(f"{path}:{name}", name, path=str(path), **spec_fields)
    outcome = run_job("inspect", {"spec": spec.to_json()}, 300, env=env, cwd=Path(__file__).parent.parent)
    assert outcome.ok, outcome.describe() + "\n" + outcome.traceback_tail
    return outcome.value, Path(env["MODELCHECK_NO_NETWORK"])


def assert_offline(log: Path) -> None:
    assert not log.exists() or not log.read_text().strip(), f"the network was used: {log.read_text()}"


def note_with(notes: list[str], *parts: str) -> str:
    found = [n for n in notes if all(p in n for p in parts)]
    assert found, f"no note with {parts} in:\n" + "\n".join(notes)
    return found[0]


@pytest.mark.slow
def test_python2_package_with_missing_weights_builds_ported_in_memory(tmp_path):
    before = _tree_digest(FIXTURES / "resnext")
    value, log = inspect(tmp_path, FIXTURES / "resnext" / "__init__.py", "resnext101")
    assert value["status"] == "ok", value.get("traceback")
    assert value["parameters"] > 0
    notes = value["build_notes"]
    if importlib.util.find_spec("modelcheck.fixers.porting") is not None:
        note_with(notes, "ported in memory: tests/fixtures/building/resnext/__init__.py:1 MC401")
        note_with(notes, "ported in memory: tests/fixtures/building/resnext/resnext101.py:4 MC401")
    note_with(notes, "weights: skipped torch.load('missing_weights.pth') at "
                     "tests/fixtures/building/resnext/resnext101.py:26 (no such file)", "own initialisation")
    assert_offline(log)
    assert _tree_digest(FIXTURES / "resnext") == before  # nothing written: no port, no .pyc


@pytest.mark.slow
def test_filtered_checkpoint_and_empty_load_are_skipped(tmp_path):
    value, log = inspect(tmp_path, FIXTURES / "resnext" / "resnext101.py", "resnext101_finetune")
    assert value["status"] == "ok", value.get("traceback")
    notes = value["build_notes"]
    note_with(notes, "torch.load('~/.torch/models/resnext101_32x4d-a8f2c3b1.pth')", "resnext101.py:32")
    note_with(notes, "ResNeXt101.load_state_dict({})", "resnext101.py:38", "empty after a skipped load")
    assert_offline(log)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "line", "what"), [
    ("VGGSeg", 13, "vgg16_bn-"),  # torchvision.models.vgg16_bn(pretrained=True)
    ("ResNetSeg", 24, "resnet50-"),  # torchvision.models.resnet50(weights="IMAGENET1K_V2")
    ("ResNet18Seg", 36, "load_url(torchvision.models.resnet.model_urls['resnet18'])"),  # model_zoo + removed name
])
def test_torchvision_pretrained_backbones_build_offline(tmp_path, name, line, what):
    value, log = inspect(tmp_path, FIXTURES / "seg" / "model.py", name)
    assert value["status"] == "ok", value.get("traceback")
    notes = value["build_notes"]
    note_with(notes, "weights: skipped", what, f"tests/fixtures/building/seg/model.py:{line}", "own initialisation")
    note_with(notes, "torchvision.models.resnet.model_urls does not exist in the installed torchvision",
              "stubbed (imported at tests/fixtures/building/seg/model.py:5)")
    utils = "tests/fixtures/building/seg/train_utils.py"
    note_with(notes, f"{SURELY_MISSING} not installed: stubbed (imported at {utils}:7)")
    for module, at in (("matplotlib", 3), ("tensorboardX", 6)):
        if importlib.util.find_spec(module) is None:
            note_with(notes, f"{module} not installed: stubbed (imported at {utils}:{at})")
    # inside try/except ImportError the user's code keeps its own fallback
    assert not [n for n in notes if "another_missing_optional_dep_2018" in n]
    assert_offline(log)


@pytest.mark.slow
def test_using_a_stubbed_package_while_building_fails_saying_so(tmp_path):
    if importlib.util.find_spec("matplotlib") is not None:
        pytest.skip("matplotlib is installed here")
    value, log = inspect(tmp_path, FIXTURES / "seg" / "model.py", "plots_while_building")
    assert value["status"] == "failed" and value["stage"] == "build"
    assert "matplotlib is not installed: modelcheck stubbed it" in value["error"]
    assert "matplotlib.pyplot.figure" in value["error"]
    assert_offline(log)


@pytest.mark.slow
def test_a_whole_pickled_model_that_is_missing_fails_clearly(tmp_path):
    value, _ = inspect(tmp_path, FIXTURES / "seg" / "model.py", "whole_model")
    assert value["status"] == "failed" and value["stage"] == "build"
    assert "torch.load('checkpoints/whole_model.pth')" in value["error"]
    assert "a whole pickled model cannot be built without its file" in value["error"]


@pytest.mark.slow
def test_timm_pretrained_builds_offline(tmp_path):
    value, log = inspect(tmp_path, FIXTURES / "timm_net.py", "TimmClassifier")
    assert value["status"] == "ok", value.get("traceback")
    note_with(value["build_notes"], "weights: skipped timm pretrained weights for resnet18",
              "tests/fixtures/building/timm_net.py:8")
    assert_offline(log)


@pytest.mark.slow
def test_existing_weight_files_load_as_the_code_says(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "net.py").write_text(
        "import os\n"
        "import torch\n"
        "import torch.nn as nn\n"
        "HERE = os.path.dirname(os.path.abspath(__file__))\n"
        "\n"
        "\n"
        "def net_from_checkpoint():\n"
        "    path = os.path.join(HERE, 'w.pth')\n"
        "    torch.save({k: torch.full_like(v, 0.5) for k, v in nn.Linear(3, 2).state_dict().items()}, path)\n"
        "    net = nn.Linear(3, 2)\n"
        "    net.load_state_dict(torch.load(path))\n"
        "    assert bool((net.weight == 0.5).all()), 'the weights file was not loaded'\n"
        "    return net\n"
    )
    value, _ = inspect(tmp_path, repo / "net.py", "net_from_checkpoint", input_shape=(1, 3))
    assert value["status"] == "ok", value.get("traceback")
    assert not [n for n in value["build_notes"] if n.startswith("weights: skipped")]


@pytest.mark.slow
def test_cli_reports_the_notes_and_no_weight_free_turns_skipping_off(tmp_path):
    from modelcheck.audit import offline_env

    env = {**os.environ, **offline_env(tmp_path)}
    spec = "tests/fixtures/building/resnext/resnext101.py:resnext101"
    root = Path(__file__).parent.parent
    args = [sys.executable, "-m", "modelcheck", "tests/fixtures/building/resnext/resnext101.py", "--model", spec,
            "--no-smoke", "--format", "json"]
    done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads(done.stdout)
    model = report["models"][0]
    assert model["status"] == "ok", model
    note_with(model["notes"], "weights: skipped torch.load('missing_weights.pth')", "resnext101.py:26")
    note_with(report["notes"], f"model {spec}: weights: skipped torch.load('missing_weights.pth')")

    done = subprocess.run([*args, "--no-weight-free"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    model = json.loads(done.stdout)["models"][0]
    assert model["status"] == "failed" and model["stage"] == "build"
    assert "missing_weights.pth" in model["detail"]
    assert_offline(Path(env["MODELCHECK_NO_NETWORK"]))


@pytest.mark.slow
def test_audit_listing_imports_the_repo_the_same_way(tmp_path):
    from modelcheck.audit import offline_env
    from modelcheck.isolation import run_job

    files = {f"seg/{name}": str(FIXTURES / "seg" / name) for name in ("model.py", "train_utils.py")}
    files["resnext/resnext101.py"] = str(FIXTURES / "resnext" / "resnext101.py")
    payload = {"files": files, "progress": str(tmp_path / "progress.json")}
    outcome = run_job("audit_list", payload, 300, env=offline_env(tmp_path))
    assert outcome.ok, outcome.describe() + "\n" + outcome.traceback_tail
    assert outcome.value["errors"] == []
