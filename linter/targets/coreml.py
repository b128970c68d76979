"""The ``coreml`` target: coremltools converts the traced model to a Core ML program; nothing runs it here.

Exported as coremltools 9 documents for PyTorch: ``torch.jit.trace`` of the model in eval mode,
then ``coremltools.convert(traced, inputs=[TensorType(...)], convert_to="mlprogram")``, saved as
``model.mlpackage`` (a folder) in the artifacts folder. A construct the converter has no
translation for fails the ``export`` stage with coremltools' own error (bilinear upsampling with
``scale_factor=1.5``: ``NotImplementedError``, ``tests/test_target_coreml.py``).

Core ML predicts only on macOS (``MLModel.predict`` needs Apple's Core ML framework), so the
``coreml`` stage is ``skipped`` with that reason: a converted model is *not* a checked one, and
the report says so instead of claiming a match. The converter lives in an environment of its own
(``modelcheck --install coreml``: torch 2.13.0 and coremltools 9.0, :mod:`modelcheck.runtimes.envs`);
its doctor check converts the one-conv model and says that prediction needs macOS.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path

from modelcheck.runtimes.envs import doctor_of, installer, status_of
from modelcheck.smoke.stages import ExportContext, Outcome, StageContext
from modelcheck.targets import Profile, Stage, TargetEnv

NAME = "coreml"
#: the converted model: an ML program package (a folder, not a file)
PACKAGE = "model.mlpackage"
#: why nothing runs the converted model here
NO_PREDICTION = "Core ML prediction needs macOS"
#: the ``coreml`` stage's detail off macOS
NEEDS_MACOS = f"{NO_PREDICTION}: converted only"
#: how coremltools logs the op it failed on
_CONVERTING = re.compile(r"converting '(\w+)' op")


def export(ctx: ExportContext) -> Path:
    """``torch.jit.trace`` + ``coremltools.convert(convert_to="mlprogram")`` → ``model.mlpackage``.

    A package left by an earlier run is removed first, so a failed conversion leaves none behind.
    """
    import coremltools as ct
    import torch

    path = ctx.artifacts / PACKAGE
    shutil.rmtree(path, ignore_errors=True)
    with ctx.inputs.bound(ctx.model) as tensors:
        traced = torch.jit.trace(ctx.model, tensors, check_trace=False)
    inputs = [ct.TensorType(name=name, shape=tuple(tensor.shape))
              for name, tensor in zip(ctx.names, ctx.inputs.tensors, strict=True)]
    with _ConverterLog() as log:
        try:
            model = ct.convert(traced, inputs=inputs, convert_to="mlprogram")
        except Exception as exc:
            raise _naming_the_op(exc, log.records) from exc
    model.save(str(path))
    return path


class _ConverterLog(logging.Handler):
    """coremltools' log while converting: it names the failing op there, not in the error it raises."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())

    def __enter__(self) -> _ConverterLog:
        logging.getLogger("coremltools").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("coremltools").removeHandler(self)


def _naming_the_op(exc: Exception, records: list[str]) -> Exception:
    """The converter's error with the op it logged (``converting 'upsample_bilinear2d' op``) appended
    as ``aten::upsample_bilinear2d``, the name the report maps to a finding; same type when possible."""
    found = [m for m in (_CONVERTING.search(r) for r in records) if m]
    if not found:
        return exc
    first = str(exc).splitlines()[0] if str(exc) else ""
    text = f"{first} (converting aten::{found[-1].group(1)})"
    try:
        return type(exc)(text)
    except Exception:  # an exception type that takes other arguments
        return RuntimeError(f"{type(exc).__name__}: {text}")


def run_coreml(ctx: StageContext) -> Outcome:
    """The ``coreml`` stage: Core ML runs here only on macOS; elsewhere it is honestly ``skipped``."""
    if sys.platform == "darwin":
        return ctx.outcome(NAME, "skipped", detail="modelcheck runs no Core ML prediction yet: converted only")
    return ctx.outcome(NAME, "skipped", detail=NEEDS_MACOS)


COREML = Stage(NAME, "Core ML", run_coreml, needs_reference=False)

PROFILE = Profile(
    name=NAME,
    runtime=NAME,
    runtime_label="Core ML",
    default_opset=0,
    stages=(COREML,),
    status=status_of(NAME),
    doctor=doctor_of(NAME, not_run=NO_PREDICTION),
    install=installer(NAME),
    install_hint=f"modelcheck --install {NAME}",
    exporters=("torch.jit.trace",),
    onnx=False,
    export=export,
    export_label="torch.jit.trace + coremltools mlprogram",
    env=TargetEnv(("torch", "coremltools", "numpy"), ("torch", "coremltools"), "coremltools"),
    artifacts=(PACKAGE,),
)
