"""The ``ort-mobile`` target: ONNX Runtime Mobile's ORT format, run and judged by ONNX Runtime's own tools.

The way ONNX Runtime documents a model's path to its mobile packages: export ONNX (TorchScript
exporter, opset 17 by default: the Android and iOS packages carry every operator of their
release, and the converter was measured to take opsets 7-23), convert it with
``onnxruntime.tools.convert_onnx_models_to_ort`` (the "Fixed" optimization style, the one the
tool recommends when no NNAPI/Core ML EP is used), load the ``.ort`` file in an
``InferenceSession`` and compare its outputs with PyTorch, and ask
``onnxruntime.tools.check_onnx_model_mobile_usability`` how well NNAPI (Android) and Core ML
(iOS) would take the model. Stages:

- ``onnx_check`` (shared with the ``onnx`` target);
- ``ort_format``: the conversion; writes ``model.ort`` and the reduced build's operator list
  ``model.required_operators.config``;
- ``ort_mobile``: the ``.ort`` file run by ONNX Runtime's CPU EP, compared with PyTorch;
- ``mobile_usability``: the usability checker's verdict. Its verdict is advice about the
  NNAPI/Core ML EPs, never that the model cannot run (ORT mobile's CPU EP runs what the
  ``ort_mobile`` stage ran), so the stage passes with the checker's words in its detail and
  fails only when the checker itself cannot read the model.

Nothing to install: the tools ship with the ``onnxruntime`` wheel. onnxruntime is imported
inside the functions (they run in the smoke and doctor child jobs), never at import.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck.smoke.stages import Outcome, StageContext
from modelcheck.targets import DoctorRun, Profile, Stage
from modelcheck.targets.onnx import ONNX_CHECK, session_run, status

NAME = "ort-mobile"
ORT_FILE = "model.ort"
#: the operators the ``.ort`` model needs: the input of a reduced-size ONNX Runtime build
OPS_CONFIG = "model.required_operators.config"
#: the execution providers the usability checker rates, in the order it reports them
_EPS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")


def convert(onnx_path: Path, folder: Path) -> Path:
    """``convert_onnx_models_to_ort`` on one file (Fixed style): ``folder/model.ort`` (and its ops config).

    The tool names its outputs after its settings (an environment variable can change the
    optimization level, and so the name), so it writes into a scratch folder whose ``.ort``
    becomes ``model.ort``. Its progress lines (print) are swallowed; its errors are raised.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    with tempfile.TemporaryDirectory(prefix="ort-format-") as scratch:
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(onnx_path, output_dir=Path(scratch),
                                       optimization_styles=[OptimizationStyle.Fixed])
        made = sorted(Path(scratch).glob("*.ort"))
        if len(made) != 1:
            raise RuntimeError(f"convert_onnx_models_to_ort wrote {len(made)} .ort file(s), not 1")
        target = folder / ORT_FILE
        shutil.move(str(made[0]), target)
        for config in Path(scratch).glob("*.config"):
            shutil.move(str(config), folder / OPS_CONFIG)
    return target


def run_ort_format(ctx: StageContext) -> Outcome:
    """The ``ort_format`` stage: the ONNX file converted to ``model.ort`` by ONNX Runtime's tool."""
    t0 = time.monotonic()
    try:
        path = convert(ctx.onnx_path, ctx.artifacts)
    except Exception as exc:  # ORT refuses an op or a shape while optimizing for the format
        return ctx.failed("ort_format", exc, time.monotonic() - t0)
    return ctx.outcome("ort_format", "passed", time.monotonic() - t0,
                       f"{_size(path.stat().st_size)} (optimization style Fixed): {path}")


def _size(count: int) -> str:
    """``12.3 kB``, ``4.56 MB``: a file's size for a detail."""
    return f"{count / 1e3:.1f} kB" if count < 1e6 else f"{count / 1e6:.2f} MB"


def run_ort_mobile(ctx: StageContext) -> Outcome:
    """The ``ort_mobile`` stage: ``model.ort`` in an InferenceSession (CPU EP), compared with PyTorch."""
    t0 = time.monotonic()
    try:
        got = session_run(ctx.artifacts / ORT_FILE, ctx.feeds, ctx.threads)
    except Exception as exc:  # the ORT format model fails to load or to run
        return ctx.failed("ort_mobile", exc, time.monotonic() - t0)
    return ctx.compared("ort_mobile", got, time.monotonic() - t0)


@dataclass
class Usability:
    """What the usability checker said: its overall answer, per EP its rating, and the reasons."""

    try_eps: bool  # True: NNAPI or Core ML "may provide benefits"; False: use the CPU EP
    ratings: dict[str, str] = field(default_factory=dict)  # EP → "YES" | "MAYBE" | "NO" (as the model is)
    reasons: list[str] = field(default_factory=list)  # unsupported ops, dynamic-shape inputs, each once

    def text(self) -> str:
        """One line: the verdict, each EP's rating, then why an EP is not a YES."""
        verdict = "NNAPI or Core ML EP worth trying" if self.try_eps else "use the CPU EP"
        ratings = ", ".join(f"{ep} {rating}" for ep, rating in self.ratings.items())
        why = f"; {'; '.join(self.reasons)}" if self.reasons else ""
        return f"the checker says: {verdict} ({ratings or 'no per-EP rating in its output'}){why}"


def check_usability(onnx_path: Path) -> Usability:
    """``check_onnx_model_mobile_usability`` on one file, its log read back (it reports by logging).

    Calls the tool's own ``analyze_model`` (what ``python -m
    onnxruntime.tools.check_onnx_model_mobile_usability`` runs) with a logger of ours.
    """
    from onnxruntime.tools.mobile_helpers import usability_checker

    lines: list[str] = []
    handler = _Collect(lines)
    logger = logging.getLogger("modelcheck.ort_mobile.usability")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try_eps = usability_checker.analyze_model(Path(onnx_path), skip_optimize=False, logger=logger)
    finally:
        logger.removeHandler(handler)
    return Usability(bool(try_eps), _ratings(lines), _reasons(lines))


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.INFO)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _ratings(lines: list[str]) -> dict[str, str]:
    """``Model should perform well with NNAPI as is: MAYBE`` → {"NNAPI": "MAYBE"}."""
    found = {}
    for line in lines:
        match = re.match(r"Model should perform well with (.+) as is: (\w+)", line.strip())
        if match:
            found[match.group(1)] = match.group(2)
    return {ep: found[ep] for ep in _EPS if ep in found} | found


def _reasons(lines: list[str]) -> list[str]:
    """Why an EP would not take every node, each reason once (the checker repeats them per EP)."""
    reasons: list[str] = []
    for line in lines:
        text = line.strip()
        unsupported = re.match(r"Unsupported ops: (.+)", text)
        dynamic = re.match(r"Unsupported nodes due to input having a dynamic shape=(\d+)", text)
        rank = re.match(r"Ops with unsupported rank: (.+)", text)
        if unsupported:
            reason = f"ops no NNAPI/Core ML EP takes: {unsupported.group(1)}"
        elif dynamic:
            count = int(dynamic.group(1))
            reason = f"{count} node{'s' if count != 1 else ''} with an input of dynamic (unknown) shape"
        elif rank:
            reason = f"ops with an input rank Core ML does not take: {rank.group(1)}"
        else:
            continue
        if reason not in reasons:
            reasons.append(reason)
    return reasons


def run_mobile_usability(ctx: StageContext) -> Outcome:
    """The ``mobile_usability`` stage: the checker's verdict; ``failed`` only when it cannot read the model."""
    t0 = time.monotonic()
    try:
        found = check_usability(ctx.onnx_path)
    except Exception as exc:  # the checker's own optimization or shape inference fails
        return ctx.failed("mobile_usability", exc, time.monotonic() - t0)
    return ctx.outcome("mobile_usability", "passed", time.monotonic() - t0, found.text())


def doctor(path: Path, feeds: dict[str, Any], timeout: float) -> DoctorRun:
    """The one-conv model converted to the ORT format and run from the ``.ort`` file, as the smoke test does."""
    import onnxruntime as ort

    folder = path.parent / "ort-mobile"
    folder.mkdir(exist_ok=True)
    t0 = time.monotonic()
    converted = convert(path, folder)
    seconds = time.monotonic() - t0
    return DoctorRun(session_run(converted, feeds), f"converted to the ORT format in {seconds:.2f} s",
                     version=ort.__version__)


ORT_FORMAT = Stage("ort_format", "ONNX Runtime's ORT format converter", run_ort_format,
                   after=("onnx_check",), needs_reference=False)
ORT_MOBILE = Stage("ort_mobile", "ONNX Runtime (ORT format)", run_ort_mobile, after=("ort_format",))
MOBILE_USABILITY = Stage("mobile_usability", "ONNX Runtime's mobile usability checker", run_mobile_usability,
                         after=("onnx_check",), needs_reference=False)

PROFILE = Profile(
    name=NAME,
    runtime="ort-mobile",
    runtime_label="ONNX Runtime Mobile (ORT format)",
    default_opset=17,
    stages=(ONNX_CHECK, ORT_FORMAT, ORT_MOBILE, MOBILE_USABILITY),
    status=status,
    doctor=doctor,
    export_options={"keep_initializers_as_inputs": False},
    artifacts=(ORT_FILE, OPS_CONFIG),
)
