"""``modelcheck --doctor``: is each runtime the smoke test needs here, and does it work?

"Installed" is not "works": a torch build can lack a library, onnxruntime can refuse a file,
the Caffe2 root can be half-built. So the doctor pushes a one-conv model through the very path
the smoke test takes (PyTorch → TorchScript exporter at opset 9 → ONNX checker → each target's
runtime), in a child job, and compares every runtime's output with PyTorch's. The targets and
their checks come from the registry (:mod:`modelcheck.targets`): one row per target's runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from modelcheck.targets import PIP_HINT, PROFILES, Profile
from modelcheck.text import one_line
from rich.console import Console
from rich.table import Table
from rich.text import Text

_TOLERANCE = 1e-4
#: what every target needs, checked before any target's own runtime
_BASE = ("torch", "onnx")


@dataclass(frozen=True)
class Check:
    """One component: its version (None when missing), whether it works, and what to do if not."""

    name: str
    version: str | None
    works: bool
    detail: str
    fix: str = ""
    target: str = "all"  # the target whose runtime this is, or "all" (what every target needs)


def doctor_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job: export a one-conv model and run it through each named target's runtime; never raises."""
    checks: dict[str, dict[str, Any]] = {name: {"version": _version(name), "works": False, "detail": "not tried"}
                                         for name in _BASE}
    try:
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
        checks["onnx"] = _export_conv(model, x, path)
    except Exception as exc:
        checks["onnx"]["detail"] = f"export or check failed: {one_line(exc)}"
        return checks
    for name in payload.get("targets", []):
        profile = PROFILES[name]
        checks[profile.runtime] = _run_conv(profile, path, {"input": x.numpy()}, expected,
                                            float(payload.get("timeout", 120)))
    return checks


def _export_conv(model: Any, x: Any, path: Path) -> dict[str, Any]:
    """The export every target starts from: TorchScript at opset 9, initializers kept as inputs."""
    import warnings

    import onnx
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=9,
                          keep_initializers_as_inputs=True, input_names=["input"])
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return {"version": onnx.__version__, "works": True,
            "detail": "exported at opset 9 (TorchScript exporter), checker passed"}


def _run_conv(profile: Profile, path: Path, feeds: dict[str, Any], expected: Any, timeout: float) -> dict[str, Any]:
    """A target's doctor check on the one-conv model, compared with PyTorch."""
    import numpy as np

    try:
        run = profile.doctor(path, feeds, timeout)
    except Exception as exc:
        return {"works": False, "detail": f"run failed: {one_line(exc)}"}
    if run.outputs is None and run.converted_only:
        return {"version": run.version, "works": True, "detail": run.detail}
    if run.outputs is None:
        return {"version": run.version, "works": False, "detail": run.detail, "fix": run.fix}
    verdict = _verdict(np.asarray(run.outputs[0]), expected)
    if run.detail:
        verdict["detail"] += f" ({run.detail})"
    return {"version": run.version, **verdict}


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

    statuses = {name: profile.status(None) for name, profile in PROFILES.items()}
    installed = [name for name, status in statuses.items() if status.installed]
    with tempfile.TemporaryDirectory(prefix="modelcheck-doctor-") as folder:
        outcome = run_job("doctor", {"folder": folder, "targets": installed, "timeout": timeout - 30},
                          timeout=timeout)
    results: dict[str, Any] = outcome.value if outcome.ok and isinstance(outcome.value, dict) else {}
    checks = []
    for name in _BASE:
        data = results.get(name) or {"version": _version(name), "works": False,
                                     "detail": f"the check itself failed: {outcome.describe()}"}
        checks.append(Check(name, data.get("version"), bool(data["works"]), data["detail"],
                            "" if data["works"] else PIP_HINT))
    for name, profile in PROFILES.items():
        status = statuses[name]
        if not status.installed:
            checks.append(Check(profile.runtime, None, False, status.reason or "not installed",
                                profile.install_hint, name))
            continue
        data = results.get(profile.runtime) or {
            "works": False, "detail": f"not tried: {outcome.describe() or 'torch or the export failed'}"}
        fix = "" if data["works"] else (data.get("fix") or profile.repair_hint or profile.install_hint)
        checks.append(Check(profile.runtime, data.get("version") or status.version, bool(data["works"]),
                            data["detail"], fix, name))
    return checks


def run_doctor(console: Console) -> int:
    """Print each runtime, its version and whether it works; 0 when all work, else 1."""
    started = time.monotonic()
    runtimes = ", ".join(profile.runtime_label for profile in PROFILES.values())
    with console.status(f"running a one-conv model through torch, ONNX and each target's runtime ({runtimes}) ..."):
        checks = diagnose()
    table = Table(title="modelcheck doctor", show_edge=False)
    for column in ("runtime", "target", "version", "works", "detail"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.name, check.target, check.version or "-",
                      Text("yes", style="green") if check.works else Text("NO", style="bold red"), check.detail)
    console.print(table)
    broken = [check for check in checks if not check.works]
    for check in broken:
        console.print(Text(f"{check.name}: to fix, run: {check.fix}", style="yellow"))
    summary = "all runtimes work" if not broken else f"{len(broken)} of {len(checks)} runtime(s) do not work"
    console.print(Text(f"{summary} ({time.monotonic() - started:.1f} s)", style="bold"))
    return 0 if not broken else 1
