"""``modelcheck audit --executor ray``: each model's job as a Ray task, for zoo-scale audits.

The listing, the cache, progress and the report stay on the machine that runs ``modelcheck
audit`` (the driver); only the per-model jobs go to the cluster. Each job is one Ray task
(:func:`audit_task`) that declares 1 CPU and the audit's memory cap (``--memory-mb``, else
:data:`DEFAULT_MEMORY_MB`) and, on whichever node Ray picks, runs the very isolation the local
executor uses: :func:`modelcheck.jobs.run.run_job` starts ``python -m modelcheck.jobs.worker`` in its
own process group with the timeout and the address-space cap. A model that hangs, crashes or
wants too much memory gives the same outcome as on this machine; the task returns the
:class:`~modelcheck.jobs.run.ChildOutcome` as plain JSON.

Ray's own failures are outcomes too, never a lost audit: when the Ray worker or node running a
job dies (``WorkerCrashedError``, ``NodeDiedError``, Ray's memory monitor, a task that cannot
even start there), that model gets a ``failed`` row ("audit job: ray: worker died: ...") with
status ``lost`` underneath, which is never cached, so the next run redoes only those models.
Tasks are not retried (``max_retries=0``): a model's own crash is already caught inside the
task, so a dead Ray worker means the machinery or the node's memory, and a retry would double
the time of a model that drives its node out of memory; a re-run with the cache is the retry.

Where the jobs run: with ``--ray-address ADDR`` (or ``RAY_ADDRESS``) on that running cluster;
without one, on a Ray runtime started here for this audit alone (no dashboard, bound to
127.0.0.1, usage stats off) and shut down after it. Every node must be able to run ``python -m
modelcheck.jobs.worker`` with the same packages as the driver (``pip install 'modelcheck[runtime,ray]'``
and the audited code's dependencies on each node, or a Ray ``runtime_env``); a folder target must
be at the same path on every node (a shared file system), since tasks run in the driver's working
directory when it exists there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelcheck.jobs.run import ChildOutcome, run_job

if TYPE_CHECKING:
    from modelcheck.audit.run import AuditTask

#: Ray ``memory`` (and address-space cap) of one model's task when the audit has no --memory-mb:
#: enough for torch plus a mid-sized vision model under RLIMIT_AS, two tasks on a 16 GiB node
DEFAULT_MEMORY_MB = 8192
_MIB = 1024 * 1024
#: driver environment passed on to each task's job (where a package target is found)
_FORWARDED_ENV = ("PYTHONPATH",)
_WAIT_SECONDS = 2.0  # ray.wait slice: the driver stays responsive to Ctrl-C


def ray_available() -> bool:
    from importlib.util import find_spec

    return find_spec("ray") is not None


def audit_task(payload: dict[str, Any], timeout: float, memory_mb: int | None, cwd: str | None,
               env: dict[str, str]) -> dict[str, Any]:
    """The Ray task: one model's audit job in a fresh, capped, killable child on this node."""
    folder = Path(cwd) if cwd and Path(cwd).is_dir() else None
    return run_job("audit_model", payload, timeout, cwd=folder, env=env, memory_limit_mb=memory_mb).to_json()


@dataclass
class RayExecutor:
    """Runs audit tasks as Ray tasks and yields each outcome as soon as its task finishes."""

    address: str | None = None  # None: RAY_ADDRESS, else a local runtime started for this audit
    timeout: float = 300.0  # per model's job, enforced on the worker node by run_job
    memory_mb: int | None = None  # the cap and the Ray memory request; None: DEFAULT_MEMORY_MB
    num_cpus: float = 1.0

    @property
    def request_mb(self) -> int:
        return self.memory_mb or DEFAULT_MEMORY_MB

    def run(self, tasks: Sequence[AuditTask]) -> Iterator[tuple[AuditTask, ChildOutcome]]:
        if not tasks:
            return
        from modelcheck.audit.run import AuditError

        if not ray_available():
            raise AuditError("--executor ray needs Ray: pip install 'modelcheck[ray]'")
        import ray

        with _ray_session(ray, self.address or os.environ.get("RAY_ADDRESS") or None):
            self._check_capacity(ray)
            remote = ray.remote(audit_task).options(
                num_cpus=self.num_cpus, memory=self.request_mb * _MIB, max_retries=0, retry_exceptions=False)
            cwd = os.getcwd()
            env = {name: os.environ[name] for name in _FORWARDED_ENV if os.environ.get(name)}
            submitted = time.monotonic()
            pending = {remote.remote(task.to_json(), self.timeout, self.request_mb, cwd, env): task for task in tasks}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_SECONDS)
                    for ref in ready:
                        task = pending.pop(ref)
                        yield task, _outcome(ray, ref, time.monotonic() - submitted)
            finally:
                for ref in pending:  # an interrupted audit leaves nothing running on the cluster
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)

    def _check_capacity(self, ray: Any) -> None:
        """A task no node can hold would wait forever (Ray calls it infeasible): say so instead."""
        from modelcheck.audit.run import AuditError

        nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
        if not any(res.get("CPU", 0) >= self.num_cpus and res.get("memory", 0) >= self.request_mb * _MIB
                   for res in nodes):
            biggest = max((res.get("memory", 0) // _MIB for res in nodes), default=0)
            raise AuditError(f"ray: no node has {self.num_cpus:g} CPU and {self.request_mb} MiB of memory for a "
                             f"model's job (largest: {biggest} MiB); lower --memory-mb")


def _outcome(ray: Any, ref: Any, seconds: float) -> ChildOutcome:
    """The task's ChildOutcome, or a ``lost`` one when Ray could not bring it back."""
    from ray import exceptions as rex

    try:
        return ChildOutcome.from_json(ray.get(ref))
    except Exception as exc:
        error: BaseException = exc
    if isinstance(error, rex.NodeDiedError):
        what = "node died"
    elif isinstance(error, (rex.WorkerCrashedError, rex.LocalRayletDiedError)):
        what = "worker died"
    elif isinstance(error, rex.OutOfMemoryError):
        what = "worker killed by Ray's memory monitor"
    elif isinstance(error, rex.TaskCancelledError):
        what = "task cancelled"
    elif isinstance(error, rex.RayTaskError):  # the task itself raised: modelcheck missing on the node, say
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else error
        what = f"task raised {type(error).__name__}"
    else:  # any other RayError: an object lost with its node, a system error
        what = type(error).__name__
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return ChildOutcome("lost", error=f"ray: {what}: {first[:300]}".rstrip(": "), seconds=seconds)


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Connected to ``address``, or to a runtime started here for this audit; disconnected (and
    that runtime stopped) after it."""
    from modelcheck.audit.run import AuditError

    if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
        yield
        return
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    saved = {name: os.environ.get(name) for name in ("RAY_USAGE_STATS_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    # Ray's driver prints the cluster's error messages ("(raylet) A worker died ...") on stdout, where
    # the report goes (--format json): while connected they go to stderr, beside the progress lines
    with contextlib.redirect_stdout(sys.stderr), _restored(saved):
        if address:
            try:
                ray.init(address=address, **quiet)
            except Exception as exc:
                raise AuditError(f"ray: cannot connect to {address}: {str(exc).strip().splitlines()[0]}") from None
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # an offline audit reports nothing home
            # this runtime serves this machine alone: bind it to 127.0.0.1, not the default route's address
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
            ray.init(address="local", include_dashboard=False, object_store_memory=256 * _MIB, **quiet)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                ray.shutdown()


@contextlib.contextmanager
def _restored(saved: dict[str, str | None]) -> Iterator[None]:
    """The environment variables in ``saved`` put back as they were."""
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ============================================================================== a loopback cluster

#: ``ray start`` for a node that joins a head on 127.0.0.1. Ray on Linux rewrites a loopback
#: address to the default route's address (services.resolve_ip_for_localhost) unless its
#: single-machine mode is on, and that mode refuses ``ray start --address``: this launcher lets the
#: node join in that mode, so every process of the cluster binds and talks to 127.0.0.1 only.
_JOIN = ("import sys, ray._private.ray_constants as c, ray._private.services as s\n"
         "c.ENABLE_RAY_CLUSTER = True\n"
         "s.resolve_ip_for_localhost = lambda host: host\n"
         "from ray.scripts.scripts import main\n"
         "sys.argv[0] = 'ray'\n"
         "main()\n")


class LoopbackCluster:
    """A real multi-node Ray cluster on this machine (tests, benchmarks): a head node and
    ``workers`` worker nodes, each a separate ``ray start --block`` in its own process group, all
    on 127.0.0.1. :attr:`env` is the environment a driver needs to join it. ``stop()`` ends every
    process of the cluster by process group (not ``ray stop``, which would end every Ray on the
    machine)."""

    def __init__(self, temp_dir: Path, workers: int = 1, cpus_per_node: int = 1, memory_mb: int | None = None) -> None:
        self.temp_dir = Path(temp_dir)
        self.workers = workers
        self.cpus_per_node = cpus_per_node
        self.memory_mb = memory_mb
        self.port = _free_port()
        self.token = secrets.token_hex(32)  # this cluster's own token: nothing in ~/.ray is read or written
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def _ray_cmd(self) -> list[str]:
        ray = Path(sys.executable).with_name("ray")
        return [str(ray)] if ray.exists() else [shutil.which("ray") or "ray"]

    def _node_args(self) -> list[str]:
        args = [f"--num-cpus={self.cpus_per_node}", "--object-store-memory=100000000", "--disable-usage-stats",
                "--block"]
        if self.memory_mb:
            args.append(f"--memory={self.memory_mb * _MIB}")
        return args

    def start(self, timeout: float = 120.0) -> LoopbackCluster:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        try:
            self._launch("head", [*self._ray_cmd(), "start", "--head", f"--port={self.port}",
                                  "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                                  f"--temp-dir={self.temp_dir}", *self._node_args()], deadline)
            for i in range(self.workers):
                self._launch(f"worker{i}", [sys.executable, "-c", _JOIN, "start", f"--address={self.address}",
                                            "--node-ip-address=127.0.0.1", *self._node_args()], deadline)
            self._wait_for_nodes(1 + self.workers, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, name: str, argv: list[str], deadline: float) -> None:
        log = self.temp_dir / f"{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=self.temp_dir, start_new_session=True)
        self.processes.append(process)
        while b"Ray runtime started" not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray {name} node did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)

    def _wait_for_nodes(self, count: int, deadline: float) -> None:
        while True:
            try:
                nodes = self.nodes(timeout=max(1.0, deadline - time.monotonic()))
            except (RuntimeError, subprocess.TimeoutExpired):
                nodes = []
            if len(nodes) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray cluster has {len(nodes)} of {count} nodes alive")
            time.sleep(0.5)

    def nodes(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """The cluster's live nodes as a driver sees them: ``address`` and ``resources`` of each."""
        probe = ("import json, logging, ray\nray.init(log_to_driver=False, logging_level=logging.WARNING)\n"
                 "print(json.dumps([{'address': n['NodeManagerAddress'], 'resources': n['Resources']}\n"
                 "                  for n in ray.nodes() if n['Alive']]))\nray.shutdown()\n")
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=self.env,
                              timeout=timeout, cwd=self.temp_dir)
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"cannot reach the Ray cluster at {self.address}: {done.stderr[-2000:]}")
        return json.loads(lines[-1])

    def pids(self) -> set[int]:
        """Every live process of the cluster: its nodes' process groups and their descendants
        (Ray's workers are the raylet's children), zombies left out."""
        table: dict[int, tuple[int, int]] = {}  # pid → (ppid, pgrp)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    if fields[0] != "Z":
                        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
        groups = {p.pid for p in self.processes}
        found = {pid for pid, (_, pgrp) in table.items() if pgrp in groups}
        while True:
            more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
            if not more:
                return found
            found |= more

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to each node's group (worker nodes first), SIGKILL to whatever is left after
        ``grace`` seconds, by pid."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.processes = []

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
