"""``modelcheck --doctor``: is each runtime the smoke test needs here, and does it work?

"Installed" is not "works": a torch build can lack a library, onnxruntime can refuse a file,
the Caffe2 root can be half-built. So the doctor pushes a one-conv model through the very path
the smoke test takes (PyTorch → TorchScript exporter at opset 9 → ONNX checker → ONNX Runtime
and Caffe2), in a child job, and compares every runtime's output with PyTorch's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from modelcheck.models.specs import one_line
from rich.console import Console
from rich.table import Table
from rich.text import Text

COMPONENTS = ("torch", "onnx", "onnxruntime", "caffe2")
_PIP_HINT = "pip install 'modelcheck[runtime]'"
_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Check:
    """One component: its version (None when missing), whether it works, and what to do if not."""

    name: str
    version: str | None
    works: bool
    detail: str
    fix: str = ""


def doctor_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job: export a one-conv model and run it through each runtime; never raises."""
    checks: dict[str, dict[str, Any]] = {}
    for name in ("torch", "onnx", "onnxruntime"):
        checks[name] = {"version": _version(name), "works": False, "detail": "not tried"}
    try:
        import numpy as np
        import torch
    except Exception as exc:
        checks["torch"]["detail"] = f"import torch failed: {one_line(exc)}"
        return checks
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    checks["torch"] = {"version": torch.__version__, "works": True,
                       "detail": f"one-conv model ran, output {tuple(expected.shape)}"}
    path = Path(payload["folder"]) / "conv.onnx"
    try:
        import warnings

        import onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=9,
                              keep_initializers_as_inputs=True, input_names=["input"])
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        checks["onnx"] = {"version": onnx.__version__, "works": True,
                          "detail": "exported at opset 9 (TorchScript exporter), checker passed"}
    except Exception as exc:
        checks["onnx"]["detail"] = f"export or check failed: {one_line(exc)}"
        return checks
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
        checks["onnxruntime"] = {"version": ort.__version__, **_verdict(got, expected)}
    except Exception as exc:
        checks["onnxruntime"]["detail"] = f"run failed: {one_line(exc)}"
    if payload.get("caffe2", True):
        from modelcheck.runtimes.caffe2 import run as caffe2_runtime

        run = caffe2_runtime.run_onnx(path, {"input": x.numpy()}, None, timeout=float(payload.get("timeout", 120)))
        if run.status == "passed" and run.outputs:
            checks["caffe2"] = _verdict(np.asarray(run.outputs[0]), expected)
            checks["caffe2"]["detail"] += f" (converted in {run.convert_seconds or 0:.2f} s)"
        else:
            checks["caffe2"] = {"works": False, "detail": f"{run.status} during {run.stage}: {run.detail}"}
    return checks


def _verdict(got: Any, expected: Any) -> dict[str, Any]:
    import numpy as np

    if got.shape != expected.shape:
        return {"works": False, "detail": f"one-conv model: shape {got.shape}, PyTorch {expected.shape}"}
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    works = diff <= _TOLERANCE
    return {"works": works, "detail": f"one-conv model: max abs diff to PyTorch {diff:.1e}"
            + ("" if works else f" (> {_TOLERANCE:g})")}


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def diagnose(timeout: float = 300.0) -> list[Check]:
    """Every component's check, run in a child job (parent side: imports no torch)."""
    import tempfile

    from modelcheck.jobs.run import run_job
    from modelcheck.runtimes.caffe2.run import runtime_status

    status = runtime_status()
    with tempfile.TemporaryDirectory(prefix="modelcheck-doctor-") as folder:
        outcome = run_job("doctor", {"folder": folder, "caffe2": status.installed, "timeout": timeout - 30},
                          timeout=timeout)
    results: dict[str, Any] = outcome.value if outcome.ok and isinstance(outcome.value, dict) else {}
    checks = []
    for name in ("torch", "onnx", "onnxruntime"):
        data = results.get(name) or {"version": _version(name), "works": False,
                                     "detail": f"the check itself failed: {outcome.describe()}"}
        fix = "" if data["works"] else _PIP_HINT
        checks.append(Check(name, data.get("version"), bool(data["works"]), data["detail"], fix))
    if not status.installed:
        checks.append(Check("caffe2", None, False, status.reason or "not installed", "modelcheck --install-caffe2"))
    else:
        data = results.get("caffe2") or {"works": False, "detail": f"not tried: {outcome.describe() or 'torch failed'}"}
        fix = "" if data["works"] else "modelcheck --install-caffe2 (it repairs a damaged install)"
        if str(data["detail"]).startswith("skipped"):
            fix = "modelcheck as root: the Caffe2 runtime runs in a chroot"
        checks.append(Check("caffe2", status.version, bool(data["works"]), data["detail"], fix))
    return checks


def run_doctor(console: Console) -> int:
    """Print each runtime, its version and whether it works; 0 when all work, else 1."""
    started = time.monotonic()
    with console.status("running a one-conv model through torch, ONNX, ONNX Runtime and Caffe2 ..."):
        checks = diagnose()
    table = Table(title="modelcheck doctor", show_edge=False)
    for column in ("runtime", "version", "works", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, check.version or "-",
                      Text("yes", style="green") if check.works else Text("NO", style="bold red"), check.detail)
    console.print(table)
    broken = [check for check in checks if not check.works]
    for check in broken:
        console.print(Text(f"{check.name}: to fix, run: {check.fix}", style="yellow"))
    summary = "all runtimes work" if not broken else f"{len(broken)} of {len(checks)} runtime(s) do not work"
    console.print(Text(f"{summary} ({time.monotonic() - started:.1f} s)", style="bold"))
    return 0 if not broken else 1
