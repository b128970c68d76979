"""The ``caffe2`` target: the seed's path to a mobile app.

TorchScript exporter (the only one that keeps initializers as graph inputs, which Caffe2's ONNX
backend reads), opset 9 by default; checked by the ONNX checker, ONNX Runtime and the real
Caffe2 backend (:mod:`modelcheck.runtimes.caffe2.run`: Debian bullseye's torch 1.7.1 in a
chroot), which converts the file to ``init_net.pb`` + ``predict_net.pb`` and runs them as a
mobile predictor. That conversion runs in its own process, so the ``caffe2`` stage starts right
after the export and runs while the other stages run in the smoke child.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelcheck.smoke.stages import Outcome, StageContext, failing_node, failing_op
from modelcheck.targets import DoctorRun, InstallError, Profile, RuntimeStatus, Stage
from modelcheck.targets.onnx import ONNX_CHECK, ONNXRUNTIME

LOG = "caffe2.log"
INSTALL = "modelcheck --install caffe2"


def run_caffe2(ctx: StageContext) -> Outcome:
    """The ``caffe2`` stage: convert and run in the chroot within the job's budget, then compare."""
    from modelcheck.runtimes.caffe2 import run as runtime

    run = runtime.run_onnx(ctx.onnx_path, ctx.feeds, ctx.artifacts, ctx.remaining(), home=ctx.home)
    return outcome(ctx, run)


def outcome(ctx: StageContext, run: Any) -> Outcome:
    """Turn a ``Caffe2Run`` into the ``caffe2`` stage's result (its log kept when it went wrong)."""
    seconds = None
    if run.convert_seconds is not None or run.run_seconds is not None:
        seconds = (run.convert_seconds or 0.0) + (run.run_seconds or 0.0)
    if run.status == "skipped":
        return ctx.outcome("caffe2", "skipped", detail=run.detail)
    tail = run.stderr_tail or ""
    if run.status != "passed" and tail.strip():
        (ctx.artifacts / LOG).write_text(tail + "\n")
    if run.status == "passed":
        return ctx.compared("caffe2", run.outputs or [], seconds)
    op, node = failing_op(tail) or failing_op(run.detail), failing_node(tail)
    if run.status == "failed":
        # Caffe2's own first line ("ONNX conversion failed, encountered 1 errors:") says little;
        # the "Exception: ..." line in its log names the operator.
        reason = next((line.split("Exception:", 1)[1].strip() for line in reversed(tail.splitlines())
                       if "Exception:" in line), "") or run.detail
        at = f" (ONNX node {node}, op {op})" if node and op else (f" (op {op})" if op else "")
        where = f"during {'conversion' if run.stage == 'convert' else 'the run'}"
        return ctx.outcome("caffe2", "failed", seconds, f"{where}: {reason}{at}", op=op, node=node)
    if run.status == "crashed":
        detail = run.detail + (f"; log: {ctx.artifacts / LOG}" if tail.strip() else "")
        return ctx.outcome("caffe2", "crashed", seconds, detail, op=op, node=node)
    return ctx.outcome("caffe2", "timeout", seconds, run.detail, op=op, node=node)


def status(home: Path | None = None) -> RuntimeStatus:
    """Is a complete root file system installed (no process started)?"""
    from modelcheck.runtimes.caffe2.run import runtime_status

    found = runtime_status(home)
    return RuntimeStatus(found.installed, found.version, found.reason)


def install(home: Path | None, progress: Callable[[str], None]) -> RuntimeStatus:
    """Build the bullseye root (idempotent, resumable); InstallError with a one-line reason."""
    from modelcheck.runtimes.caffe2.run import Caffe2InstallError, install_runtime

    try:
        done = install_runtime(home, progress=progress)
    except Caffe2InstallError as exc:
        raise InstallError(str(exc)) from None
    return RuntimeStatus(done.installed, done.version, done.reason)


def doctor(path: Path, feeds: dict[str, Any], timeout: float) -> DoctorRun:
    """The one-conv model through the real runner, conversion included."""
    from modelcheck.runtimes.caffe2.run import run_onnx

    run = run_onnx(path, feeds, None, timeout=timeout)
    if run.status == "passed" and run.outputs:
        return DoctorRun(list(run.outputs), f"converted in {run.convert_seconds or 0:.2f} s")
    fix = "modelcheck as root: the Caffe2 runtime runs in a chroot" if run.status == "skipped" else ""
    return DoctorRun(None, f"{run.status} during {run.stage}: {run.detail}", fix=fix)


CAFFE2 = Stage("caffe2", "Caffe2", run_caffe2, after=("onnx_check",), background=True)

PROFILE = Profile(
    name="caffe2",
    runtime="caffe2",
    runtime_label="Caffe2",
    default_opset=9,
    stages=(ONNX_CHECK, ONNXRUNTIME, CAFFE2),
    status=status,
    doctor=doctor,
    install=install,
    install_hint=INSTALL,
    repair_hint=f"{INSTALL} (it repairs a damaged install)",
    exporters=("torchscript",),
    exporter_reason="keep_initializers_as_inputs",
    export_options={"keep_initializers_as_inputs": True},
    artifacts=("init_net.pb", "predict_net.pb", LOG),
)
