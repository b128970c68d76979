"""The ``onnx`` target: any opset and exporter, checked by the ONNX checker and ONNX Runtime (CPU).

Its two stages are the first checks of every ONNX-based target, so other profiles reuse
:data:`ONNX_CHECK` and :data:`ONNXRUNTIME`. Nothing to install: ONNX Runtime comes with
``pip install 'modelcheck[runtime]'``. onnx and onnxruntime are imported inside the functions
(they run in the smoke and doctor child jobs), never at import.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

from modelcheck.smoke.stages import Outcome, StageContext
from modelcheck.targets import DoctorRun, Profile, RuntimeStatus, Stage


def check(ctx: StageContext) -> Outcome:
    """The ``onnx_check`` stage: the full checker, strict shape inference included."""
    t0 = time.monotonic()
    try:
        detail = check_model(ctx.onnx_path)
    except Exception as exc:  # checker errors carry the node in their text
        return ctx.failed("onnx_check", exc, time.monotonic() - t0)
    return ctx.outcome("onnx_check", "passed", time.monotonic() - t0, detail)


def check_model(path: Path) -> str:
    """Run the full checker on a file; a short description of its graph.

    Checked by path: the checker reads the file in C++, three times faster on a 170 MB model
    than passing it a loaded proto (which is serialized again to cross into C++).
    """
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    ops = sorted({node.op_type for node in model.graph.node})
    text = f"{len(model.graph.node)} nodes ({opsets}; ir {model.ir_version}): {', '.join(ops[:12])}"
    return text + (" …" if len(ops) > 12 else "")


def run_onnxruntime(ctx: StageContext) -> Outcome:
    """The ``onnxruntime`` stage: a CPU run compared with PyTorch eager."""
    t0 = time.monotonic()
    try:
        got = session_run(ctx.onnx_path, ctx.feeds, ctx.threads)
    except Exception as exc:  # ORT raises for ops or shapes it cannot run
        return ctx.failed("onnxruntime", exc, time.monotonic() - t0)
    return ctx.compared("onnxruntime", got, time.monotonic() - t0)


def session_run(path: Path, feeds: dict[str, Any], threads: int = 0) -> list[Any]:
    """All outputs of one CPU run; feeds the graph does not take (folded constants) are left out."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # initializers-as-inputs warnings are expected for caffe2
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    del session
    return outputs


def status(home: Path | None = None) -> RuntimeStatus:
    """Installed with the ``runtime`` extra; the version from its metadata (nothing imported)."""
    try:
        return RuntimeStatus(True, metadata.version("onnxruntime"))
    except metadata.PackageNotFoundError:
        return RuntimeStatus(False, None, "onnxruntime not installed")


def doctor(path: Path, feeds: dict[str, Any], timeout: float) -> DoctorRun:
    """The one-conv model through ONNX Runtime, as the smoke test runs it."""
    import onnxruntime as ort

    return DoctorRun(session_run(path, feeds), version=ort.__version__)


ONNX_CHECK = Stage("onnx_check", "the ONNX checker", check, needs_reference=False)
ONNXRUNTIME = Stage("onnxruntime", "ONNX Runtime", run_onnxruntime, after=("onnx_check",))

PROFILE = Profile(
    name="onnx",
    runtime="onnxruntime",
    runtime_label="ONNX Runtime",
    default_opset=17,
    stages=(ONNX_CHECK, ONNXRUNTIME),
    status=status,
    doctor=doctor,
    export_options={"keep_initializers_as_inputs": False},
)
