"""``modelcheck audit`` on cloned research repositories: constructor arguments from the repo's own
call sites (:mod:`modelcheck.models.callsites`), root architectures first, per-model verdicts.

The fixtures (tests/fixtures/audit_repos/) are written in the style of 2018 saliency repos:
``salnet`` (``Net(n_channels, n_classes)`` built in test.py, a Python 2 training script, a sibling
class that upsamples bilinearly), ``rclnet`` (``Vgg(RCLBlock)`` in a demo script), ``twoarch``
(two architectures, eight building blocks, one block with a two-tensor forward).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from modelcheck.models.callsites import RepoIndex, bind_forward, describe_args

REPOS = Path(__file__).parent / "fixtures" / "audit_repos"


# ----- call sites (static, fast) ------------------------------------------------------------------


def test_arguments_come_from_the_test_script_before_train_and_python2_files_are_skipped() -> None:
    sites = RepoIndex(REPOS / "salnet").call_sites(REPOS / "salnet" / "model.py", "Net")
    assert [site.origin for site in sites] == ["test.py:13", "train.py:10"]  # train_old.py: Python 2
    best = sites[0]
    assert (best.args, best.kwargs, best.text) == ([3, 1], {}, "Net(3, 1)")
    assert (best.forward_line, best.forward_tensors, best.forward_literals) == (22, 1, {})
    assert sites[1].kwargs == {"n_channels": 3, "n_classes": 2}


def test_a_class_passed_by_name_becomes_a_reference_and_literal_forward_arguments_are_bound() -> None:
    site = RepoIndex(REPOS / "rclnet").call_sites(REPOS / "rclnet" / "rcl.py", "Vgg")[0]
    assert site.origin == "demo.py:8"
    assert site.args == [{"$ref": f"{(REPOS / 'rclnet' / 'rcl.py').resolve()}:RCLBlock"}]  # via ``import *``
    assert (site.forward_tensors, site.forward_literals) == (1, {1: "test"})  # out = model(image, 'test')
    assert describe_args(site) == "RCLBlock"

    class Vgg:
        def forward(self, x, phase="train"): ...

    assert bind_forward(Vgg.forward, site) == {"phase": "test"}
    assert bind_forward(Vgg.forward, site.to_json()) == {"phase": "test"}


def test_resolution_through_packages_aliases_chains_and_what_is_refused(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("from .net import Net\n")
    (tmp_path / "models" / "net.py").write_text("class Net:\n    def __init__(self, cfg, n=1): ...\n")
    (tmp_path / "config.py").write_text("class Cfg:\n    pass\n\n\ncfg = Cfg()\nN_CLASSES = 21\n")
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "infer.py").write_text(
        "import models as M\nfrom config import cfg, N_CLASSES\n\n\n"
        "def run(local):\n"
        "    a = M.Net(local)\n"  # a local variable: not usable
        "    b = M.net.Net(*local)\n"  # *args: not usable
        "    net = M.Net(cfg, n=N_CLASSES).cuda()\n"  # a reference, and an inlined literal
        "    net = torch.nn.DataParallel(net)\n"
        "    return net(x, y, flag=True)\n"
    )
    sites = RepoIndex(tmp_path).call_sites(tmp_path / "models" / "net.py", "Net")
    assert len(sites) == 1
    site = sites[0]
    assert site.origin == "tools/infer.py:8"
    assert site.args == [{"$ref": f"{(tmp_path / 'config.py').resolve()}:cfg"}]
    assert site.kwargs == {"n": 21}
    assert (site.forward_tensors, site.forward_keywords) == (2, {"flag": True})


def test_a_reference_into_a_script_that_runs_at_import_is_refused(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("class Net:\n    def __init__(self, block): ...\n")
    (tmp_path / "run.py").write_text(
        "from net import Net\n\n\nclass Block:\n    pass\n\n\nmodel = Net(Block)\nmodel(x)\n")
    (site,) = RepoIndex(tmp_path).call_sites(tmp_path / "net.py", "Net")
    assert not site.args_known and site.args == []  # importing run.py would run it: Block is refused
    assert site.forward_tensors == 1  # the call still says how the instance is called


# ----- the audit on the fixture repos (builds torch models) ----------------------------------------


def _audit(cwd: Path, *args: str) -> dict:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    done = subprocess.run([sys.executable, "-m", "modelcheck", "audit", *args, "--no-smoke", "--no-cache",
                           "--input-shape", "1,3,32,32", "--timeout", "60", "--format", "json"],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    shutil.copytree(REPOS, tmp_path / "repos")
    return tmp_path / "repos"


@pytest.mark.slow
def test_audit_builds_with_call_site_arguments_and_counts_only_what_the_model_reaches(repos: Path) -> None:
    data = _audit(repos, "salnet", "rclnet", "--jobs", "2")
    assert data["version"] == 2
    rows = {row["model"]: row for row in data["models"]}
    assert set(rows) == {"salnet/model.py:Net", "rclnet/rcl.py:Vgg"}
    net = rows["salnet/model.py:Net"]
    assert net["status"] == "ok"
    assert "constructor arguments from test.py:13: Net(3, 1)" in net["notes"]
    # SideOutput's bilinear F.interpolate sits in Net's file, but Net never runs it
    assert net["findings"] == []
    assert [(f["code"], f["line"]) for f in net["unreached"]] == [("MC201", 25)]
    vgg = rows["rclnet/rcl.py:Vgg"]
    assert vgg["status"] == "ok"
    assert any(n.startswith("constructor arguments from demo.py:8: Vgg(RCLBlock)") and "phase='test'" in n
               for n in vgg["notes"])
    notes = "\n".join(data["notes"])
    assert "left out 1 building block (parts of Vgg): RCLBlock" in notes
    assert "left out 1 building block (parts of Net): ConvBNReLU" in notes
    assert "skipped salnet/model.py:SideOutput: needs argument(s) in_ch, scale" in notes
    assert data["summary"]["breaking"] == 0


@pytest.mark.slow
def test_audit_picks_root_architectures_and_skips_multi_input_blocks_under_all_modules(repos: Path) -> None:
    data = _audit(repos, "twoarch")
    assert sorted(row["model"] for row in data["models"]) == ["twoarch/basnet.py:BASNet", "twoarch/r3net.py:R3Net"]
    note = next(n for n in data["notes"] if "left out" in n)
    assert note.startswith("models: left out 8 building blocks (parts of BASNet, R3Net): ")
    assert note.endswith("--all-modules to audit them")

    data = _audit(repos, "twoarch", "--all-modules", "--match", "*Gate")
    (gate,) = data["models"]
    assert (gate["model"], gate["status"], gate["detail"]) == (
        "twoarch/r3net.py:AttentionGate", "skipped", "needs 2 inputs (x, g)")
    assert "constructor arguments from r3net.py:48: AttentionGate(8)" in gate["notes"]
    assert data["summary"]["breaking"] == 0
    assert data["summary"]["skipped"] == 1


def test_a_package_reexport_wins_over_the_submodule_of_the_same_name(tmp_path: Path) -> None:
    """``from model import Net`` where model/__init__.py does ``from .Net import Net``: the class, as at run time."""
    from modelcheck.models.callsites import RepoIndex

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "__init__.py").write_text("from .Net import Net\n")
    (tmp_path / "model" / "Net.py").write_text("import torch.nn as nn\n\n\nclass Net(nn.Module):\n"
                                               "    def __init__(self, c_in, c_out):\n        super().__init__()\n")
    (tmp_path / "net_test.py").write_text("from model import Net\n\nnet = Net(3, 1)\n")
    (site,) = RepoIndex(tmp_path).call_sites(tmp_path / "model" / "Net.py", "Net")
    assert (site.args, site.origin) == ([3, 1], "net_test.py:3")


@pytest.mark.slow
def test_classes_a_decorated_zoo_factory_builds_are_its_parts(tmp_path: Path) -> None:
    """torchvision wraps its factories (@register_model, @handle_legacy_interface): the class the
    factory builds is still found to be its part, so SqueezeNet is not audited twice."""
    data = _audit(tmp_path, "torchvision.models.squeezenet")
    assert sorted(row["model"] for row in data["models"]) == [
        "torchvision.models.squeezenet:squeezenet1_0", "torchvision.models.squeezenet:squeezenet1_1"]
    assert any("SqueezeNet" in note and "--all-modules" in note for note in data["notes"]), data["notes"]


@pytest.mark.slow
def test_a_base_class_is_not_a_building_block_of_its_subclass(tmp_path: Path) -> None:
    """``class NetLarge(Net)`` calling ``Net.__init__(self)``: two architectures, not one and a part."""
    (tmp_path / "nets.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n    def __init__(self, c=3):\n"
        "        super(Net, self).__init__()\n        self.conv = nn.Conv2d(c, 4, 3)\n\n"
        "    def forward(self, x):\n        return self.conv(x)\n\n\nclass NetLarge(Net):\n"
        "    def __init__(self):\n        Net.__init__(self, c=3)\n        self.extra = nn.Conv2d(4, 4, 1)\n\n"
        "    def forward(self, x):\n        return self.extra(self.conv(x))\n")
    data = _audit(tmp_path, ".")
    assert sorted(row["model"] for row in data["models"]) == ["nets.py:Net", "nets.py:NetLarge"]


def test_running_a_class_body_does_not_reach_its_methods(tmp_path: Path) -> None:
    """A class defined while a model is built (its body runs) is not the model running its methods."""
    from modelcheck.trace.job import ReachedCode

    source = tmp_path / "blocks.py"
    source.write_text("class Block:\n    def used(self):\n        return 1\n\n"
                      "    def unused(self):\n        return 2\n")
    namespace: dict = {}
    reached = ReachedCode(str(tmp_path / "reached.json"))
    reached.start()
    try:
        exec(compile(source.read_text(), str(source), "exec"), namespace)
        namespace["Block"]().used()
    finally:
        reached.stop()
    assert reached.ranges()[str(source.resolve())] == [[2, 3]]  # used(), not the whole class


@pytest.mark.slow
def test_forward_arguments_from_a_solver_that_keeps_the_model_on_self(tmp_path: Path) -> None:
    """``self.net = build_model(self.config.arch)`` in one method, ``self.net(x, mode=1)`` in another:
    the constructor's arguments cannot be read, but the repo's own call says what ``mode`` takes."""
    (tmp_path / "joint.py").write_text(
        "import torch.nn as nn\n\n\nclass JointNet(nn.Module):\n    def __init__(self, base='vgg'):\n"
        "        super(JointNet, self).__init__()\n        self.edge = nn.Conv2d(3, 1, 1)\n"
        "        self.sal = nn.Conv2d(3, 1, 3, padding=1)\n\n    def forward(self, x, mode):\n"
        "        return self.edge(x) if mode == 0 else self.sal(x)\n\n\n"
        "def build_model(base_model_cfg='vgg'):\n    return JointNet(base_model_cfg)\n")
    (tmp_path / "joint_solver.py").write_text(
        "from joint import build_model\n\n\nclass Solver(object):\n    def __init__(self, config):\n"
        "        self.config = config\n        self.build_model()\n\n    def build_model(self):\n"
        "        self.net = build_model(self.config.arch)\n\n    def train(self, loader):\n"
        "        for sal_image, sal_label in loader:\n            sal_pred = self.net(sal_image, mode=1)\n")
    data = _audit(tmp_path, ".")
    (row,) = [r for r in data["models"] if r["model"] == "joint.py:build_model"]
    assert row["status"] == "ok", row["detail"]
    assert "forward called with mode=1, as the repo does at joint_solver.py:14" in row["notes"], row["notes"]
