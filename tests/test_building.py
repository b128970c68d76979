"""modelcheck.models.building: third-party code builds as cloned (weights skipped, ported in memory, stubs).

The fast tests exercise the sentinel and stub objects in this process (no torch, nothing
installed here). The slow ones run the real child jobs on fixture repositories written in the
style of 2018 research code (tests/fixtures/building/), offline, with real torch/torchvision/timm.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from modelcheck.models import building
from modelcheck.models.building import SkippedWeights, Stub, StubModule

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


# ----- fast: regressions (no torch: the import hooks alone, or the objects) ------------------------


@pytest.fixture
def fresh_state():
    """building's process state, reset after the test (uninstall also resets a state never installed)."""
    building.uninstall()
    yield
    building.uninstall()


@pytest.fixture
def import_hooks(fresh_state, monkeypatch):
    """What install() sets up for stubs, without torch: the ``__import__`` wrapper and _MissingFinder."""
    state = building._state
    state.installed = True
    state.finders = [building._MissingFinder()]
    state.real_import = builtins.__import__
    sys.meta_path.append(state.finders[0])
    builtins.__import__ = building._import
    modules = set(sys.modules)
    yield state
    building.uninstall()
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_a_stub_submodule_is_hidden_from_library_code_on_its_real_parent(tmp_path, import_hooks, monkeypatch):
    """``from torch._six import PY3`` in the project left ``torch._six`` bound to the stub on the
    real ``torch``: library code saw ``hasattr(torch, "_six")`` and ``from torch import _six`` work."""
    library = tmp_path / "site-packages" / "mcfakelib"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("")
    (library / "probe.py").write_text(
        "def from_import(name):\n"
        "    try:\n"
        "        module = __import__('mcfakelib', fromlist=[name])\n"
        "        return getattr(module, name)\n"
        "    except (ImportError, AttributeError):\n"
        "        return None\n"
        "\n"
        "\n"
        "def has(name):\n"
        "    import mcfakelib\n"
        "    return hasattr(mcfakelib, name)\n")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "mc_leaky_net.py").write_text(
        "from mcfakelib.gone import PY3\n"
        "import mcfakelib.gone2 as g2\n"
        "import mcfakelib.gone3\n"
        "G3 = mcfakelib.gone3.thing\n")
    import_hooks.roots = [str(project.resolve()) + os.sep]
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.syspath_prepend(str(library.parent))

    import mc_leaky_net  # noqa: F401 - runs under the hooks
    import mcfakelib
    from mcfakelib import probe

    net = sys.modules["mc_leaky_net"]
    assert isinstance(net.PY3, Stub) and isinstance(net.g2, StubModule) and isinstance(net.G3, Stub)
    for name in ("gone", "gone2", "gone3"):
        assert f"mcfakelib.{name}" not in sys.modules and name not in vars(mcfakelib)
        assert not probe.has(name) and probe.from_import(name) is None
        assert not hasattr(mcfakelib, name)  # this test file is not the project's either
    building.uninstall()
    assert "__getattr__" not in vars(mcfakelib)


def test_missing_finder_imports_the_projects_own_package_from_its_root(tmp_path, import_hooks, monkeypatch):
    """``from mclib7.nms import VALUE`` in ``models/net.py`` with ``mclib7/`` at the repo root: the
    project's package, not "mclib7 not installed"; imported for real, as from the repo root."""
    repo = tmp_path / "repo"
    (repo / "mclib7").mkdir(parents=True)
    (repo / "mclib7" / "__init__.py").write_text("")
    (repo / "mclib7" / "nms.py").write_text("VALUE = 3\n")
    (repo / "models").mkdir()
    (repo / "models" / "mc_net7.py").write_text(
        "from mclib7.nms import VALUE\n"
        f"import {SURELY_MISSING}\n")
    import_hooks.roots = [str(repo.resolve()) + os.sep, str((repo / "models").resolve()) + os.sep]
    monkeypatch.syspath_prepend(str(repo / "models"))

    import mc_net7  # noqa: F401 - runs under the hooks

    net = sys.modules["mc_net7"]
    assert net.VALUE == 3
    assert Path(sys.modules["mclib7"].__file__).resolve() == (repo / "mclib7" / "__init__.py").resolve()
    notes = building.notes()
    assert not [n for n in notes if "mclib7 not installed" in n], notes
    assert [n for n in notes if n.startswith("project package mclib7 is not importable") and "sys.path" in n]
    assert [n for n in notes if n.startswith(f"{SURELY_MISSING} not installed: stubbed")]
    assert str(repo.resolve()) in sys.path
    building.uninstall()
    assert str(repo.resolve()) not in sys.path


def test_copying_or_pickling_a_stub(fresh_state):
    writer = Stub("tensorboardX is not installed", "tensorboardX.SummaryWriter")
    assert copy.copy(writer) is writer and copy.deepcopy(writer) is writer
    assert copy.deepcopy({"writer": writer})["writer"] is writer
    for dump in (lambda: pickle.dumps(writer), lambda: pickle.dumps({"model": [writer]}, protocol=2)):
        with pytest.raises(ModuleNotFoundError, match=r"tensorboardX.SummaryWriter \(pickled\) was used"):
            dump()
    blank = Stub.__new__(Stub)  # what a copy protocol makes before filling the slots
    with pytest.raises(AttributeError):
        blank._mc_missing  # noqa: B018 - an empty slot, not a recursion
    assert isinstance(writer.add_scalar, Stub)  # ordinary names still give stubs


def test_skipped_keys_slices_are_empty_keys():
    keys = SkippedWeights("torch.load('w.pth')").keys()
    rest = keys[1:]
    assert isinstance(rest, type(keys)) and list(rest) == [] and not rest
    assert [k for k in keys[:2]] == []
    assert isinstance(keys[0], str)  # ``w[keys[0]]`` (Python 2 code) still works


def test_skipped_weights_explain_says_why_the_load_was_skipped(fresh_state):
    url = building._skip("load_url('https://x/resnet50.pth')", "no downloads in a weight-free build", "net.py:3")
    message = url["state_dict"].explain(".eval")
    assert "at net.py:3 was skipped (no downloads in a weight-free build)" in message
    assert "does not exist" not in message
    assert "(no such file)" in building._skip("torch.load('w.pth')", "no such file", None).explain(".eval")


def test_the_project_root_is_never_the_filesystem_root_or_home(tmp_path, monkeypatch, fresh_state):
    import tempfile
    from types import SimpleNamespace

    from modelcheck.models.specs import package_name

    home = tmp_path / "home"
    project = home / "proj"
    (project / "nets").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (project / "model.py").write_text("from .x import y\n")
    (project / "nets" / "deep.py").write_text("from ..x import y\n")
    assert package_name(project / "model.py") == (project, "model")  # not (home, "proj.model")
    assert package_name(project / "nets" / "deep.py") == (project, "nets.deep")
    (home / "lone.py").write_text("from .x import y\n")
    assert package_name(home / "lone.py") == (home, "lone")

    temp = Path(tempfile.gettempdir())
    if temp.parent == temp.parent.parent:  # /tmp: climbing from /tmp/model.py would reach /
        handle, name = tempfile.mkstemp(suffix=".py", dir=temp)
        os.close(handle)
        try:
            Path(name).write_text("from .x import y\n")
            root, _ = package_name(Path(name))
            assert root == temp.resolve() or root == temp
        finally:
            os.unlink(name)

    # a package root that is home itself gives way to the file's folder; a file right in home is
    # its own one-file root
    (home / "__init__.py").write_text("")
    (project / "__init__.py").write_text("")
    (project / "plain.py").write_text("x = 1\n")
    assert package_name(project / "plain.py")[0] == home.parent  # the package chain, as written
    (home / "__init__.py").unlink()
    assert package_name(project / "plain.py") == (home, "proj.plain")
    roots = building.project_roots(SimpleNamespace(path=str(project / "plain.py")))
    assert roots == [project.resolve()]
    assert building.project_roots(SimpleNamespace(path=str(home / "lone.py"))) == [(home / "lone.py").resolve()]

    building._state.installed = True  # install() then only adds the spec's roots (no torch)
    building.install(SimpleNamespace(path=str(project / "plain.py")))
    building.install(SimpleNamespace(path=str(home / "lone.py")))
    (home / "elsewhere").mkdir()
    (home / "elsewhere" / "other.py").write_text("")
    (home / "sibling.py").write_text("")
    assert building.is_project_file(str(project / "plain.py")) and building.is_project_file(str(home / "lone.py"))
    assert not building.is_project_file(str(home / "elsewhere" / "other.py"))
    assert not building.is_project_file(str(home / "sibling.py"))


def test_an_empty_state_dict_is_skipped_only_when_tied_to_a_skipped_load(tmp_path, monkeypatch, fresh_state):
    """After one skipped load, every strict ``load_state_dict({})`` was skipped, hiding real bugs."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "mc_loads.py").write_text(
        "from modelcheck.models import building\n"
        "\n"
        "\n"
        "def load():\n"
        "    return building._skip(\"torch.load('w.pth')\", 'no such file', None)\n"
        "\n"
        "\n"
        "def check(state_dict):  # where load_state_dict asks, from its caller\n"
        "    return building._derived_from_skip(0)\n"
        "\n"
        "\n"
        "def filtered_in_the_same_factory():\n"
        "    filtered = {k: v for k, v in load().items()}\n"
        "    return check(filtered)\n"
        "\n"
        "\n"
        "def unrelated():\n"
        "    return check({})\n"
        "\n"
        "\n"
        "CKPT = None\n"
        "\n"
        "\n"
        "def keep_at_module_level():\n"
        "    global CKPT\n"
        "    CKPT = load()\n")
    is_library = building.is_library  # the tests' own frames count as library code here
    monkeypatch.setattr(building, "is_library", lambda f: is_library(f) or not f.startswith(str(project)))
    spec = importlib.util.spec_from_file_location("mc_loads", project / "mc_loads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    assert not module.unrelated()
    assert module.filtered_in_the_same_factory()
    assert not module.unrelated()  # the skip's frames are gone: an empty dict here is a real error
    module.keep_at_module_level()
    assert module.unrelated()  # the module holds a skipped load: ``ckpt = torch.load(...)`` at top level


def test_surely_missing_names_are_missing():
    assert importlib.util.find_spec(SURELY_MISSING) is None



_PORTING_LOADER = """
import importlib, importlib.util, os, sys
from pathlib import Path
from modelcheck.models import building
from modelcheck.fixers.porting import port_source

root = Path(sys.argv[1]).resolve()
building._state.porting = port_source  # what install() sets up, without torch
building._state.roots = [str(root) + os.sep]
sys.meta_path.insert(0, building._FirstFinder())
if sys.argv[2] == "top-level":  # the repo's own pattern: sys.path.insert(0, 'backbone'); import resnet
    sys.path.insert(0, str(root / "backbone"))
    module = importlib.import_module("resnet")
elif sys.argv[2] == "by-location":  # specs.load_module's fallback: the file by location, no package
    path = root / "backbone" / "resnet.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(
        "modelcheck_user_resnet", path, loader=building.source_loader("modelcheck_user_resnet", path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
else:  # as a package module: the implicit relative import is ported in memory
    sys.path.insert(0, str(root))
    module = importlib.import_module("backbone.resnet")
print(module.width(), module.config.__name__)
print(*building.notes(), sep="\\n")
"""


@pytest.mark.parametrize(("how", "config_name", "ported"), [
    ("top-level", "config", ["MC403"]), ("by-location", "config", ["MC403"]),
    ("package", "backbone.config", ["MC401", "MC403"])])
def test_porting_loader_rewrites_sibling_imports_only_in_a_package(tmp_path, how, config_name, ported):
    """A module imported without a parent package got `from . import config`: "attempted relative
    import with no known parent package". Torch-free: the loader alone, in a child."""
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "__init__.py").write_text("")
    (backbone / "config.py").write_text("base = 64\n")
    (backbone / "resnet.py").write_text(
        "import config\n\n\ndef width():\n    return sum(config.base for _ in xrange(2))\n")
    proc = subprocess.run([sys.executable, "-c", _PORTING_LOADER, str(tmp_path), how],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"128 {config_name}"
    assert [line.split()[4] for line in lines[1:] if line.startswith("ported in memory:")] == ported
    assert not list(tmp_path.rglob("*.pyc"))


# ----- slow: real child jobs on the fixtures -------------------------------------------------------


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def inspect(tmp_path: Path, path: Path, name: str, **spec_fields) -> tuple[dict, Path]:
    """The inspect job on ``path:name``, offline (network guarded and logged, hubs offline)."""
    from modelcheck.audit.run import offline_env
    from modelcheck.jobs.run import run_job
    from modelcheck.models.specs import ModelSpec

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
    from modelcheck.audit.run import offline_env

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
    from modelcheck.audit.run import offline_env
    from modelcheck.jobs.run import run_job

    files = {f"seg/{name}": str(FIXTURES / "seg" / name) for name in ("model.py", "train_utils.py")}
    files["resnext/resnext101.py"] = str(FIXTURES / "resnext" / "resnext101.py")
    payload = {"files": files, "progress": str(tmp_path / "progress.json")}
    outcome = run_job("audit_list", payload, 300, env=offline_env(tmp_path))
    assert outcome.ok, outcome.describe() + "\n" + outcome.traceback_tail
    assert outcome.value["errors"] == []


@pytest.mark.slow
def test_uninstall_restores_torch_and_imports_after_an_in_process_build(tmp_path, monkeypatch):
    """specs.build_model in the pytest process (tests/test_inputs.py) left the import hook, the
    finders and the patched torch.load installed for the rest of the session."""
    from types import SimpleNamespace

    import torch
    import torch.hub

    building.uninstall()
    original_import, original_meta_path = builtins.__import__, list(sys.meta_path)
    original_load_state_dict = torch.nn.Module.load_state_dict
    original_download = torch.hub.load_state_dict_from_url
    project = tmp_path / "proj"
    project.mkdir()
    (project / "mc_six_user.py").write_text(
        "import torch\n"
        "import torch.nn as nn\n"
        "from torch._six import PY3\n"
        "\n"
        "\n"
        "def with_skip():\n"
        "    net = nn.Linear(2, 2)\n"
        f"    state = torch.load({str(tmp_path / 'missing.pth')!r})\n"
        "    net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})\n"
        "    return net\n"
        "\n"
        "\n"
        "def unrelated_bug():\n"
        "    net = nn.Linear(2, 2)\n"
        "    net.load_state_dict({})\n"
        "    return net\n")
    monkeypatch.syspath_prepend(str(project))
    tests = str(Path(__file__).parent)  # this test's frames stand where the child's job runner would
    is_library = building.is_library
    monkeypatch.setattr(building, "is_library", lambda f: is_library(f) or f.startswith(tests))
    try:
        building.install(SimpleNamespace(path=str(project / "mc_six_user.py"), weight_free=True))
        assert builtins.__import__ is not original_import
        import mc_six_user

        assert isinstance(mc_six_user.PY3, Stub)
        assert not hasattr(torch, "_six") and "torch._six" not in sys.modules  # library code: still missing
        with pytest.raises(ImportError):
            exec("from torch import _six", {})
        mc_six_user.with_skip()  # the filtered empty dict of a skipped load: skipped
        with pytest.raises(RuntimeError, match="Missing key"):
            mc_six_user.unrelated_bug()  # an empty dict unrelated to any skip: the real error
    finally:
        building.uninstall()
        building.uninstall()  # idempotent
        sys.modules.pop("mc_six_user", None)
    assert builtins.__import__ is original_import and sys.meta_path == original_meta_path
    assert torch.nn.Module.load_state_dict is original_load_state_dict
    assert torch.hub.load_state_dict_from_url is original_download
    assert "__getattr__" not in vars(torch) or not getattr(vars(torch)["__getattr__"], "_modelcheck_hider", False)
    with pytest.raises(FileNotFoundError):
        torch.load(tmp_path / "missing.pth")
