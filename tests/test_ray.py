"""``modelcheck audit --executor ray`` on a real two-node Ray cluster on 127.0.0.1.

The cluster (a head node and a worker node, each a separate ``ray start`` with one CPU; see
:class:`modelcheck.audit.ray.LoopbackCluster`) is started once for this module and stopped
after it, all its processes by id. Each model's job is a Ray task that runs the same isolated
child as the local executor, so the fixture zoo's hang, crash, memory hog and network access
must give the same rows either way; a Ray worker killed under a job must give that model a
failure row while the others finish.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_audit import FIXTURES, SHAPE

TIMEOUT = "20"  # per stage: the hanging model costs this much per run
COMMON = ["--input-shape", SHAPE, "--memory-mb", "4000", "--no-cache", "--format", "json"]


def _need_ray() -> None:
    from modelcheck.audit.ray import ray_available

    if not ray_available():
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: the test extra brings it (pip install -e '.[test]')")
        pytest.skip("ray is not installed (pip install 'modelcheck[ray]')")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    _need_ray()
    from modelcheck.audit.ray import LoopbackCluster

    ray_cluster = LoopbackCluster(tmp_path_factory.mktemp("ray"), workers=1, cpus_per_node=1).start()
    try:
        nodes = ray_cluster.nodes()
        assert len(nodes) == 2 and {node["address"] for node in nodes} == {"127.0.0.1"}, nodes
        yield ray_cluster
    finally:
        ray_cluster.stop()
        assert not ray_cluster.pids(), "the Ray cluster left processes behind"


def run_audit(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    env = {**(env or os.environ), "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    done = subprocess.run([sys.executable, "-m", "modelcheck", "audit", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=400)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def results(data: dict) -> dict[str, tuple]:
    """What must not depend on where a job ran: status, detail, each stage's status, finding codes."""
    return {row["model"]: (row["status"], row["detail"], [(s["name"], s["status"]) for s in row["stages"]],
                           sorted(f["code"] for f in row["findings"]), sorted(f["code"] for f in row["unreached"]),
                           row["network"], (row["pickle"] or {}).get("ok"))
            for row in data["models"]}


@pytest.mark.slow
@pytest.mark.ray
def test_ray_audit_of_the_zoo_matches_the_local_one(cluster, tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "zoo")
    args = ["zoo", "--timeout", TIMEOUT, "--artifacts", "artifacts", *COMMON]

    local = run_audit([*args, "--jobs", "2"], tmp_path)
    on_ray = run_audit([*args, "--executor", "ray", "--ray-address", cluster.address], tmp_path, cluster.env)

    assert {model: r[0] for model, r in results(on_ray).items()} == {
        "zoo/good.py:GoodNet": "ok",
        "zoo/raising.py:RaisingNet": "build failed",
        "zoo/hanging.py:HangingNet": "timeout",  # killed by the job's timeout on the Ray node
        "zoo/crashing.py:CrashingNet": "crashed",
        "zoo/greedy.py:GreedyNet": "out of memory",  # the --memory-mb cap holds on the Ray node too
        "zoo/downloading.py:tiny_net": "ok",
        "zoo/downloading.py:AlwaysDownloads": "network",
    }
    assert results(on_ray) == results(local)
    good_row = next(row for row in on_ray["models"] if row["model"].endswith("GoodNet"))
    good = {stage["name"]: stage["status"] for stage in good_row["stages"]}
    assert good["export"] == good["onnxruntime"] == "passed"


SLEEPY = '''"""A model whose forward writes its pid and then takes its time (a Ray worker is killed under it)."""

import os
import time

import torch.nn as nn


class SleepyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with open({pid_file!r}, "w") as handle:
            handle.write(str(os.getpid()))
        time.sleep(300)
        return self.conv(x)
'''


def _ray_worker_above(pid: int) -> int | None:
    """The nearest ancestor of ``pid`` that is a Ray worker process (``ray::...``)."""
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the parent
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
            return pid
    return None


@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_worker_killed_mid_job_is_a_failure_row_and_the_others_finish(cluster, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    pid_file = tmp_path / "sleepy.pid"
    (zoo / "sleepy.py").write_text(SLEEPY.replace("{pid_file!r}", repr(str(pid_file))))
    for name in ("good.py", "raising.py"):
        shutil.copy(FIXTURES / name, zoo / name)
    env = {**cluster.env, "NO_COLOR": "1"}
    env.pop("MODELCHECK_HOME", None)
    driver = subprocess.Popen(
        [sys.executable, "-m", "modelcheck", "audit", "zoo", "--timeout", "120", "--no-smoke",
         "--executor", "ray", "--ray-address", cluster.address, *COMMON],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert driver.poll() is None and time.monotonic() < deadline, "SleepyNet's forward never started"
            time.sleep(0.2)
        forward_pid = int(pid_file.read_text())
        worker_pid = _ray_worker_above(forward_pid)
        assert worker_pid is not None, "no Ray worker above the model's process"
        os.kill(worker_pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 1, err
    rows = {row["model"]: row for row in json.loads(out)["models"]}
    assert {model: row["status"] for model, row in rows.items()} == {
        "zoo/sleepy.py:SleepyNet": "failed",
        "zoo/good.py:GoodNet": "ok",
        "zoo/raising.py:RaisingNet": "build failed",
    }
    assert rows["zoo/sleepy.py:SleepyNet"]["detail"].startswith("audit job: ray: worker died"), rows
    # the model's own processes went down with the Ray worker (parent-death signal): nothing sleeps on
    deadline = time.monotonic() + 10
    while _alive(forward_pid):
        assert time.monotonic() < deadline, "the killed job's model process outlived its Ray worker"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_lost_job_round_trips_as_json_and_is_a_failed_row() -> None:
    from modelcheck.audit.run import AuditTask, row_from_outcome
    from modelcheck.jobs.run import ChildOutcome

    crashed = ChildOutcome("crashed", signal=11, seconds=1.5, traceback_tail="Fatal Python error")
    assert ChildOutcome.from_json(json.loads(json.dumps(crashed.to_json()))) == crashed
    task = AuditTask("zoo/a.py:Net", "class", {}, {}, "artifacts", "key")
    lost = ChildOutcome("lost", error="ray: worker died: the worker was killed (out of memory?)", seconds=3.0)
    row = row_from_outcome(task, ChildOutcome.from_json(lost.to_json()))
    assert (row.status, row.detail) == ("failed", "audit job: ray: worker died: the worker was killed (out of memory?)")


def test_ray_failures_become_lost_outcomes() -> None:
    _need_ray()
    from modelcheck.audit.ray import _outcome
    from ray import exceptions as rex

    class FakeRay:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def get(self, ref):
            raise self.error

    cases = [(rex.WorkerCrashedError(), "ray: worker died"), (rex.NodeDiedError("node 1 died"), "ray: node died"),
             (rex.TaskCancelledError(), "ray: task cancelled")]
    for error, start in cases:
        outcome = _outcome(FakeRay(error), None, 2.0)
        assert outcome.status == "lost" and outcome.error.startswith(start), (error, outcome)


def test_ray_address_needs_the_ray_executor(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "modelcheck", "audit", str(FIXTURES), "--ray-address", "127.0.0.1:1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "modelcheck: error: --ray-address needs --executor ray"
