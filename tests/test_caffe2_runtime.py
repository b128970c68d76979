"""The real Caffe2 runtime: install state, conversion, running, and its failure modes.

No mocks: tests marked ``caffe2`` run models through Debian bullseye's torch 1.7.1 in its
chroot (``modelcheck --install caffe2``).  Without the runtime they skip, or fail when
MODELCHECK_REQUIRE_CAFFE2=1 (CI), so a missing install can never pass as green.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import require_caffe2
from modelcheck.runtimes.caffe2 import run as caffe2_runtime
from modelcheck.runtimes.caffe2.run import (
    NOT_INSTALLED,
    ROOT_NAME,
    Caffe2InstallError,
    check_runtime,
    default_home,
    host_debian_mirror,
    install_runtime,
    run_onnx,
    runtime_status,
)
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def caffe2_home() -> Path:
    """The home holding an installed runtime; skip (or fail under CI) without one."""
    require_caffe2()
    return default_home()


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def _model(nodes, inputs, outputs, initializers=(), opset: int = 9) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(initializers))
    # No ir_version given: the host's onnx stamps its newest one, which the chroot's
    # onnx 1.10 does not know; the worker must cope (as it would with other tools' files).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.fixture()
def conv_model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """Conv 3->4, 3x3, pad 1, stride 1 + Relu; weights listed as inputs (as the exporter
    does with keep_initializers_as_inputs=True); with numpy's answer in float64."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", F, x.shape),
            helper.make_tensor_value_info("w", F, w.shape),
            helper.make_tensor_value_info("b", F, b.shape),
        ],
        [helper.make_tensor_value_info("y", F, (2, 4, 9, 9))],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    ref = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64)) + b[None, :, None, None]
    return _save(model, tmp_path / "conv.onnx"), {"x": x}, np.maximum(ref, 0.0)


def _leftover_jobs(home: Path) -> list[str]:
    """This process's job dirs in the chroot (others may be running models at the same time)."""
    return sorted(p.name for p in (home / ROOT_NAME / "tmp").glob(f"mc-{os.getpid()}-*"))


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    points = [ln.split()[1] for ln in Path("/proc/self/mounts").read_text().splitlines()]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


# ------------------------------------------------------------- without the runtime


def test_skipped_with_reason_when_home_is_empty(tmp_path, monkeypatch, conv_model):
    monkeypatch.setenv("MODELCHECK_HOME", str(tmp_path / "empty"))
    assert default_home() == tmp_path / "empty"
    status = runtime_status()
    assert (status.installed, status.version, status.reason) == (False, None, NOT_INSTALLED)
    path, inputs, _ = conv_model
    run = run_onnx(path, inputs, tmp_path / "out", timeout=30)
    assert run.status == "skipped"
    assert run.detail == "Caffe2 runtime not installed (run `modelcheck --install caffe2`)"
    assert run.outputs is None and run.signal is None
    assert not (tmp_path / "out").exists()
    assert check_runtime() == (False, NOT_INSTALLED)


def test_host_module_stays_light():
    """The CLI imports it on every run (status, --doctor): no torch, no numpy, no onnx."""
    code = "import sys, modelcheck.runtimes.caffe2.run; print(sorted({'torch', 'numpy', 'onnx'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_worker_is_python39_and_standalone():
    """The worker runs under bullseye's Python 3.9 in the chroot, without modelcheck."""
    src = (Path(caffe2_runtime.__file__).with_name("job.py")).read_text()
    tree = ast.parse(src, feature_version=(3, 9))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "modelcheck" not in imported
    assert imported <= {
        "faulthandler",
        "json",
        "os",
        "re",
        "sys",
        "time",
        "traceback",
        "numpy",
        "onnx",
        "onnxoptimizer",
        "caffe2",
    }
    # No PEP 604 unions or other 3.10+ annotations evaluated at run time.
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr)]


def test_half_done_install_is_not_installed(tmp_path):
    (tmp_path / ROOT_NAME / "usr/bin").mkdir(parents=True)
    status = runtime_status(tmp_path)
    assert not status.installed
    assert "incomplete" in status.reason and "--install caffe2" in status.reason


def test_marker_from_another_recipe_is_not_installed(tmp_path):
    root = tmp_path / ROOT_NAME
    root.mkdir()
    (root / ".modelcheck-ready").write_text(json.dumps({"format": -1, "torch": "1.7.1"}))
    status = runtime_status(tmp_path)
    assert not status.installed and "another modelcheck version" in status.reason


def test_mirror_comes_from_the_hosts_apt_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("MODELCHECK_DEBIAN_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    # A third-party repository and the security archive come first and must be passed over.
    (apt / "sources.list.d" / "a-vendor.sources").write_text(
        "Types: deb\nURIs: file:///srv/vendor\nSuites: nodistro\nComponents: main\n"
    )
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: file:///srv/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: file:///srv/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    assert host_debian_mirror(apt) == "file:///srv/debian"

    one_line = tmp_path / "apt1"
    one_line.mkdir()
    (one_line / "sources.list").write_text(
        "# deb file:///srv/old bullseye main\n"
        "deb [arch=amd64 signed-by=/k.gpg] file:///srv/mirror/debian trixie main contrib\n"
    )
    assert host_debian_mirror(one_line) == "file:///srv/mirror/debian"
    assert host_debian_mirror(tmp_path / "nothing-here") is None

    monkeypatch.setenv("MODELCHECK_DEBIAN_MIRROR", "file:///srv/override/")
    assert host_debian_mirror(apt) == "file:///srv/override"


def test_install_refuses_an_unreachable_archive_in_one_line(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the precondition checked first for non-root users is root itself")
    if not any(Path(d, "debootstrap").exists() for d in ("/usr/sbin", "/usr/bin", "/sbin")):
        pytest.skip("debootstrap absent: install_runtime would apt-get it first")
    monkeypatch.setenv("MODELCHECK_DEBIAN_MIRROR", f"file://{tmp_path}/no-archive")
    with pytest.raises(Caffe2InstallError) as err:
        install_runtime(tmp_path / "home", progress=lambda _: None)
    assert "not reachable" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "home" / ROOT_NAME).exists()


# ---------------------------------------------------------------- with the runtime


@pytest.mark.caffe2
def test_installed_runtime_status_and_idempotent_install(caffe2_home):
    status = runtime_status(caffe2_home)
    assert status.installed and status.version == "caffe2 (torch 1.7.1)"
    lines: list[str] = []
    t0 = time.monotonic()
    assert install_runtime(caffe2_home, progress=lines.append) == status
    assert time.monotonic() - t0 < 1.0  # a complete install returns at once
    assert len(lines) == 1 and "already installed" in lines[0]


@pytest.mark.caffe2
@pytest.mark.slow
def test_conv_round_trip_matches_numpy_and_onnxruntime(caffe2_home, conv_model, tmp_path):
    import onnxruntime as ort

    path, inputs, ref = conv_model
    out = tmp_path / "nets"
    run = run_onnx(path, inputs, out, timeout=120, home=caffe2_home)
    assert run.status == "passed", (run.detail, run.stderr_tail)
    assert run.signal is None and run.stage == "run"
    assert run.convert_seconds is not None and 0 < run.convert_seconds < 30
    assert run.run_seconds is not None and 0 < run.run_seconds < 30
    (got,) = run.outputs
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    (ort_out,) = ort.InferenceSession(str(path)).run(None, inputs)
    np.testing.assert_allclose(got, ort_out, rtol=0, atol=1e-5)

    init, predict = out / "init_net.pb", out / "predict_net.pb"
    assert init.stat().st_size > 4 * 3 * 3 * 3 * 4  # holds the conv weights
    assert b"Conv" in predict.read_bytes() and b"Relu" in predict.read_bytes()
    assert _leftover_jobs(caffe2_home) == []
    assert _mounts_under(caffe2_home / ROOT_NAME) == []  # /proc stayed in the child's namespace


@pytest.mark.caffe2
@pytest.mark.slow
def test_torch_exported_model_matches_eager(caffe2_home, tmp_path):
    """The caffe2 profile's real exporter settings, on the constructs the seed rewrote to."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.pool = torch.nn.MaxPool2d(2, 2, ceil_mode=False)
            self.up = torch.nn.ConvTranspose2d(8, 4, 2, stride=2)

        def forward(self, x):
            return torch.sigmoid(self.up(self.pool(torch.relu(self.bn(self.conv(x))))))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 3, 32, 32)
    path = tmp_path / "net.onnx"
    torch.onnx.export(
        net, (x,), str(path), dynamo=False, opset_version=9,
        keep_initializers_as_inputs=True, input_names=["x"], output_names=["y"],
    )  # fmt: skip
    with torch.no_grad():
        ref = net(x).numpy()
    run = run_onnx(path, {"x": x.numpy()}, None, timeout=120, home=caffe2_home)
    assert run.status == "passed", (run.detail, run.stderr_tail)
    np.testing.assert_allclose(run.outputs[0], ref, rtol=0, atol=1e-5)


@pytest.mark.caffe2
@pytest.mark.slow
def test_unsupported_op_fails_at_convert_with_the_op_named(caffe2_home, tmp_path):
    """Resize (opset 10+) is what F.interpolate exports to at opset 11: Caffe2 has no Resize."""
    x = np.ones((1, 3, 4, 4), np.float32)
    model = _model(
        [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest")],
        [helper.make_tensor_value_info("x", F, x.shape)],
        [helper.make_tensor_value_info("y", F, (1, 3, 8, 8))],
        [
            numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
            numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        ],
        opset=11,
    )
    path = _save(model, tmp_path / "resize.onnx")
    run = run_onnx(path, {"x": x}, tmp_path / "nets", timeout=120, home=caffe2_home)
    assert (run.status, run.stage, run.signal, run.outputs) == ("failed", "convert", None, None)
    assert "Resize" in run.detail and "\n" not in run.detail
    assert "Traceback" in run.stderr_tail  # where in the backend it gave up
    assert not (tmp_path / "nets" / "predict_net.pb").exists()


@pytest.mark.caffe2
@pytest.mark.slow
def test_run_time_error_fails_at_run_and_keeps_the_nets(caffe2_home, conv_model, tmp_path):
    path, _, _ = conv_model
    wrong = {"x": np.ones((2, 5, 9, 9), np.float32)}  # 5 channels for a 3-channel conv
    run = run_onnx(path, wrong, tmp_path / "nets", timeout=120, home=caffe2_home)
    assert (run.status, run.stage, run.signal) == ("failed", "run", None)
    assert "input channels does not match" in run.detail and "Conv" in run.detail
    assert run.convert_seconds is not None and run.run_seconds is None
    assert (tmp_path / "nets" / "predict_net.pb").exists()  # conversion itself worked


@pytest.mark.caffe2
@pytest.mark.slow
def test_segfault_in_caffe2_is_reported_as_crashed(caffe2_home, tmp_path):
    """A genuine Caffe2 bug: Upsample with negative scales makes a tensor with negative
    dimensions, no check fires, and fetching it segfaults the process."""
    x = np.ones((1, 3, 8, 8), np.float32)
    model = _model(
        [helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")],
        [
            helper.make_tensor_value_info("x", F, x.shape),
            helper.make_tensor_value_info("scales", F, [4]),
        ],
        [helper.make_tensor_value_info("y", F, ["n", "c", "h", "w"])],
        [numpy_helper.from_array(np.array([1, 1, -3, -3], np.float32), "scales")],
    )
    path = _save(model, tmp_path / "upsample_negative.onnx")
    t0 = time.monotonic()
    run = run_onnx(path, {"x": x}, None, timeout=120, home=caffe2_home)
    assert run.status == "crashed", (run.detail, run.stderr_tail)
    assert run.signal in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
    assert run.stage == "run" and run.outputs is None
    assert signal.Signals(run.signal).name in run.detail
    assert "Fatal Python error" in run.stderr_tail  # faulthandler's stack from the child
    assert time.monotonic() - t0 < 60
    assert _leftover_jobs(caffe2_home) == []


@pytest.fixture()
def slow_model(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """60 chained 2048x2048 MatMuls: about 20 s of Caffe2 on two cores."""
    n, k = 2048, 60
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"y{i - 1}", "x"], [f"y{i}"])
             for i in range(k)]  # fmt: skip
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [n, n])],
        [helper.make_tensor_value_info(f"y{k - 1}", F, [n, n])],
    )
    return _save(model, tmp_path / "slow.onnx"), {"x": np.full((n, n), 1.0 / n, np.float32)}


def _workers_of(pid: int) -> list[int]:
    """Processes running a job of the modelcheck process pid (their argv names its job dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"/tmp/mc-{pid}-".encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.caffe2
@pytest.mark.slow
def test_timeout_kills_the_child_in_about_the_time_given(caffe2_home, slow_model):
    path, inputs = slow_model
    t0 = time.monotonic()
    run = run_onnx(path, inputs, None, timeout=3.0, home=caffe2_home)
    elapsed = time.monotonic() - t0
    assert run.status == "timeout", (run.detail, run.stderr_tail)
    assert run.outputs is None and run.signal is None
    assert "3 s" in run.detail and run.stage == "run"
    assert 3.0 <= elapsed < 8.0
    assert _workers_of(os.getpid()) == []
    assert _leftover_jobs(caffe2_home) == []
    assert _mounts_under(caffe2_home / ROOT_NAME) == []


@pytest.mark.caffe2
@pytest.mark.slow
def test_worker_dies_with_a_killed_modelcheck(caffe2_home, slow_model, tmp_path):
    """SIGKILL leaves modelcheck no chance to clean up: the kernel must end the worker."""
    path, _ = slow_model
    code = (
        "import sys, numpy as np; from pathlib import Path; from modelcheck.runtimes.caffe2.run import run_onnx\n"
        "x = np.full((2048, 2048), 1.0 / 2048, np.float32)\n"
        "run_onnx(Path(sys.argv[1]), {'x': x}, None, timeout=300, home=Path(sys.argv[2]))\n"
    )
    host = subprocess.Popen([sys.executable, "-c", code, str(path), str(caffe2_home)])
    try:
        deadline = time.monotonic() + 30
        while not _workers_of(host.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _workers_of(host.pid), "the worker never started"
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 5
    while _workers_of(host.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _workers_of(host.pid) == []
    for job in (caffe2_home / ROOT_NAME / "tmp").glob(f"mc-{host.pid}-*"):
        shutil.rmtree(job)  # its owner is dead; the next run would sweep it too


@pytest.mark.caffe2
@pytest.mark.slow
def test_job_dirs_of_dead_processes_are_swept(caffe2_home, conv_model):
    """A modelcheck killed with SIGKILL cannot clean up; the next run does."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    tmp = caffe2_home / ROOT_NAME / "tmp"
    stale, alive = tmp / f"mc-{dead.pid}-stale", tmp / f"mc-{os.getpid()}-alive"
    for d in (stale, alive):
        d.mkdir()
        (d / "model.onnx").write_bytes(b"x")
    try:
        path, inputs, _ = conv_model
        assert run_onnx(path, inputs, None, timeout=120, home=caffe2_home).status == "passed"
        assert not stale.exists()
        assert alive.exists()  # its owner (this process) still runs
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


@pytest.mark.caffe2
@pytest.mark.slow
def test_doctor_check(caffe2_home):
    ok, msg = check_runtime(caffe2_home)
    assert ok, msg
    assert msg.startswith("caffe2 (torch 1.7.1): ") and "max abs diff" in msg
