"""What a target's smoke-test stage works with: its context, its outcome, the comparison with PyTorch.

A target profile (:mod:`modelcheck.targets`) lists stages; each is a function
``run(ctx: StageContext) -> Outcome`` that the smoke child (:mod:`modelcheck.smoke.job`) calls
after the export. This module is the whole toolkit such a function needs, so a target module
imports this and nothing of the job's machinery. Torch-free; numpy only inside :func:`comparison`.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck.findings import StageResult
from modelcheck.text import one_line

#: the error text names the operator the exporter or a runtime failed on
_OP_PATTERNS = (
    re.compile(r"export of operator (\w+)"),
    re.compile(r"translate op (\w+)"),
    re.compile(r"node has kind '(?:aten|prim|onnx)::(\w+)'"),
    re.compile(r"Op \((\w+)\)"),
    re.compile(r'op_type: "(\w+)"'),
    re.compile(r"\baten::(\w+)"),
    re.compile(r"layer (\S+) not exists or registered"),  # ncnn: a layer it does not have
    re.compile(r"torch\._ops\.aten\.(\w+)\."),  # ExecuTorch: "... is not in Core ATen opset"
    re.compile(r"\((?:ONNX node [^,()]+, )?(?:Caffe2 |ONNX )?op (\w+)\)"),  # a stage detail's own note
)
_NODE_PATTERNS = (re.compile(r'name: "([^"]+)"\s+op_type:'), re.compile(r"Node \(([^)]+)\)"),
                  re.compile(r"\(ONNX node ([^,()]+), "))

#: An output matches PyTorch when ``max|got - expected| <= atol + rtol * scale``, where ``scale``
#: is that output's max |PyTorch value|: float noise grows with the values an output holds, so a
#: fixed absolute tolerance cries wolf on large outputs (a ResNet-50's features of scale 80 differ
#: by 3e-4 in float noise) and is blind on small ones. RTOL lies between the largest difference of
#: models that are right and the smallest of known wrong exports, both re-measured by
#: ``benchmarks/bench_tolerance.py`` (numbers in docs/evidence.md).
RTOL = 2e-4
#: the absolute floor: how far an output whose PyTorch values are all (near) zero may be off
ATOL = 1e-30


@dataclass
class Outcome:
    """A stage's result plus what the parent needs to map it to source: the failing op/node."""

    stage: StageResult
    op: str | None = None
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.stage.to_json(), "op": self.op, "node": self.node}  # the result's own are unset here


@dataclass
class ExportContext:
    """What a non-ONNX target's ``export`` gets in the smoke child: the live model and its inputs.

    ``inputs`` is a :class:`~modelcheck.models.specs.ExampleInputs`: ``inputs.tensors`` are the
    graph inputs (named ``names``), ``inputs.bound(model)`` binds the constant arguments. The
    function writes its file (``.pte``, ``.tflite``) into ``artifacts`` and returns its path, or
    raises with the converter's error.
    """

    model: Any
    inputs: Any
    names: list[str]
    artifacts: Path
    target: dict[str, Any]  # name, opset, exporter


@dataclass
class StageContext:
    """What a stage function gets: the exported file and its inputs, the budget, and (through
    :meth:`reference`) PyTorch's outputs, which a background stage may ask for before they exist."""

    model: str
    target: dict[str, Any]  # name, opset, exporter
    path: Path  # the export stage's file: model.onnx, or the target's own (model.pte)
    feeds: dict[str, Any]  # graph input name → numpy array
    artifacts: Path
    deadline: float  # time.monotonic() by which the whole job must be done
    atol: float = ATOL
    rtol: float = RTOL
    home: Path | None = None  # where installed runtimes live (None: their default)
    threads: int = 0  # intra-op threads for a runtime in this process (0: its own default)
    reference_error: str = "no PyTorch reference in time"
    _expected: list[Any] | None = None
    _ready: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def onnx_path(self) -> Path:
        """The exported ONNX file (the ONNX-based targets' name for :attr:`path`)."""
        return self.path

    def remaining(self, at_least: float = 1.0) -> float:
        """Seconds left of the job's budget, at least ``at_least`` (a runtime given 0 s learns nothing)."""
        return max(self.deadline - time.monotonic(), at_least)

    def set_reference(self, expected: list[Any] | None, error: str = "") -> None:
        """PyTorch eager's outputs, or why there are none; wakes a stage waiting in :meth:`reference`."""
        self._expected = expected
        if error:
            self.reference_error = error
        self._ready.set()

    def reference(self) -> list[Any] | None:
        """PyTorch eager's outputs (None when the forward failed), waiting for them until the deadline."""
        self._ready.wait(max(self.deadline - time.monotonic(), 0.0))
        return self._expected

    def outcome(self, stage: str, status: str, seconds: float | None = None, detail: str = "", *,
                max_abs: float | None = None, max_rel: float | None = None, op: str | None = None,
                node: str | None = None, scale: float | None = None) -> Outcome:
        return Outcome(StageResult(self.model, stage, status, seconds, max_abs, max_rel, detail, scale=scale),
                       op, node)

    def failed(self, stage: str, exc: BaseException, seconds: float | None = None) -> Outcome:
        """``failed`` with the exception's one line and the operator/node its text names."""
        text = str(exc)
        return self.outcome(stage, "failed", seconds, one_line(exc), op=failing_op(text), node=failing_node(text))

    def compared(self, stage: str, outputs: list[Any], seconds: float | None = None) -> Outcome:
        """``passed`` or ``mismatch`` against PyTorch eager; ``failed`` when there is no reference."""
        expected = self.reference()
        if expected is None:
            return self.outcome(stage, "failed", detail=self.reference_error)
        done = comparison(outputs, expected, self.atol, self.rtol)
        return self.outcome(stage, done.status, seconds, done.detail, max_abs=done.max_abs, max_rel=done.max_rel,
                            scale=done.scale)


def run_compared(ctx: StageContext, stage: str, run_file: Any) -> Outcome:
    """A runtime stage of a non-ONNX target: ``run_file(ctx.path, ctx.feeds)``, compared with PyTorch;
    an exception of the runtime is the stage failing (with the op its text names)."""
    t0 = time.monotonic()
    try:
        outputs = run_file(ctx.path, ctx.feeds)
    except Exception as exc:  # the runtime refuses the file or an operator
        return ctx.failed(stage, exc, time.monotonic() - t0)
    return ctx.compared(stage, outputs, time.monotonic() - t0)


def failing_op(text: str) -> str | None:
    """The operator an exporter or runtime error names (``upsample_bilinear2d``, ``Resize``)."""
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def failing_node(text: str) -> str | None:
    """The ONNX node name an ONNX Runtime or Caffe2 error names (``/up/Resize``)."""
    for pattern in _NODE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


@dataclass(frozen=True)
class Comparison:
    """Runtime outputs against PyTorch eager: the verdict, its numbers and a sentence saying why."""

    status: str  # "passed" | "mismatch"
    max_abs: float | None  # max |got - expected| over all outputs
    max_rel: float | None  # max over outputs of that output's max abs diff / its scale
    scale: float | None  # the scale (max |PyTorch value|) of the output ``max_rel`` comes from
    detail: str


@dataclass(frozen=True)
class _Output:
    """One output's numbers; ``problem`` is None when it matches."""

    max_abs: float
    max_rel: float | None
    scale: float
    problem: str | None


def compare(
    got: list[Any], expected: list[Any], atol: float = ATOL, rtol: float = RTOL
) -> tuple[str, float | None, float | None, str]:
    """(status, max_abs_diff, max_rel_diff, detail): :func:`comparison` as a tuple."""
    done = comparison(got, expected, atol, rtol)
    return done.status, done.max_abs, done.max_rel, done.detail


def comparison(got: list[Any], expected: list[Any], atol: float = ATOL, rtol: float = RTOL) -> Comparison:
    """Runtime outputs against PyTorch eager, each output judged against its own scale.

    ``mismatch`` when the count or a shape differs, when NaNs are not where PyTorch has them, or
    when an output's max abs diff exceeds ``atol + rtol * scale`` (integer and boolean outputs:
    any difference). ``max_rel`` is the worst output's max abs diff over its scale (None when
    every output's scale is 0).
    """
    import numpy as np

    if len(got) != len(expected):
        return Comparison("mismatch", None, None, None, f"{len(got)} output(s), PyTorch has {len(expected)}")
    outputs: list[_Output] = []
    problems: list[str] = []
    for index, (a, b) in enumerate(zip(got, expected, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            problems.append(f"output {index}: shape {shape_text(a.shape)}, PyTorch {shape_text(b.shape)}")
        elif a.size:
            out = _compare_output(index, a, b, atol, rtol)
            outputs.append(out)
            problems.extend([out.problem] if out.problem else [])
    max_abs = max((o.max_abs for o in outputs), default=None if problems else 0.0)  # None: no output compared
    rated = [o for o in outputs if o.max_rel is not None]
    worst = max(rated, key=lambda o: o.max_rel or 0.0) if rated else None
    max_rel, scale = (worst.max_rel, worst.scale) if worst else (None, None)
    if problems:
        return Comparison("mismatch", max_abs, max_rel, scale, "; ".join(problems))
    shapes = ", ".join(shape_text(np.asarray(e).shape) for e in expected)
    numbers = f": max abs diff {max_abs:.2g}" + (f", {max_rel:.2g} of scale {scale:.3g}" if worst else "")
    return Comparison("passed", max_abs, max_rel, scale,
                      f"{len(expected)} output(s) {shapes} match PyTorch{numbers} (tolerance {rtol:g} of scale)")


def _compare_output(index: int, a: Any, b: Any, atol: float, rtol: float) -> _Output:
    """One output of the same shape as PyTorch's: its diff, scale and, when it is off, why."""
    import numpy as np

    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities are zeroed below
        diff = np.asarray(np.abs(np.where(nan_a | nan_b, 0.0, a64 - b64)))  # a 0-d output stays an array
    diff[np.isinf(a64) & (a64 == b64)] = 0.0
    finite = np.abs(b64[np.isfinite(b64)])
    scale = float(finite.max()) if finite.size else 0.0
    exact = b.dtype.kind in "biu"  # indices, counts, masks: a different value is a different answer
    allowed = 0.0 if exact else atol + rtol * scale
    max_abs = float(diff.max())
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else None)
    bad = diff > allowed
    problems = [f"output {index}: {text}" for text in _nan_problems(nan_a, nan_b)]
    if bad.any():
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        share = f" = {max_rel:.2g} of its scale {scale:.3g}" if scale > 0 else " (scale 0: no PyTorch value is nonzero)"
        rule = "exact (integer output)" if exact else f"{atol:g} + {rtol:g} × scale = {allowed:.2g}"
        problems.append(
            f"output {index}: max abs diff {max_abs:.3g} at {list(where)} (got {a64[where]:.6g}, "
            f"PyTorch {b64[where]:.6g}){share}; {int(bad.sum())} of {bad.size} elements beyond {rule}"
        )
    return _Output(max_abs, max_rel, scale, "; ".join(problems) or None)


def _nan_problems(nan_got: Any, nan_expected: Any) -> list[str]:
    """NaNs count as equal only where both sides have them; a NaN either side alone is a mismatch."""
    problems = []
    extra, missing = int((nan_got & ~nan_expected).sum()), int((nan_expected & ~nan_got).sum())
    if extra:
        problems.append(f"NaN at {extra} element(s) where PyTorch has none")
    if missing:
        problems.append(f"a number at {missing} element(s) where PyTorch has NaN")
    return problems


def shape_text(shape: tuple[int, ...]) -> str:
    """``1×3×16×16``; ``scalar`` for ``()``."""
    return "×".join(str(d) for d in shape) or "scalar"
