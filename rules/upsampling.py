"""MC2xx: upsampling that ONNX export or the Caffe2 backend gets wrong.

The seed's author rewrote every upsample as ``nn.ConvTranspose2d`` by hand. Measured on this
project's machines (docs/evidence.md): at opset 9 a bilinear ``F.interpolate`` exports without error
and then differs from PyTorch by 0.88 in both ONNX Runtime and Caffe2; ``align_corners=True``
does not export at all before opset 11; from opset 11 the exporter emits ``Resize``, which the
Caffe2 backend cannot convert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family, bind_call, is_layer, plain
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments, calls_with_facts, cst, walk
from modelcheck.targets import Target

LINEAR_MODES = frozenset({"linear", "bilinear", "bicubic", "trilinear"})

_CTOR = ("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor")
_FUNC = ("input", *_CTOR)
_FIXED_MODE = ("size", "scale_factor")
_F_FIXED_MODE = ("input", *_FIXED_MODE)


@dataclass(frozen=True)
class _Api:
    params: tuple[str, ...]
    mode: Any = None  # implied mode, or None when the call passes it
    align_corners: Any = None  # implied align_corners
    deprecated: str | None = None  # the replacement to suggest


APIS: dict[str, _Api] = {
    "torch.nn.Upsample": _Api(_CTOR),
    "torch.nn.UpsamplingBilinear2d": _Api(_FIXED_MODE, "bilinear", True),
    "torch.nn.UpsamplingNearest2d": _Api(_FIXED_MODE, "nearest", None),
    "torch.nn.functional.interpolate": _Api(_FUNC),
    "torch.nn.functional.upsample": _Api(_FUNC[:5], deprecated="F.interpolate"),  # no recompute_scale_factor
    "torch.nn.functional.upsample_bilinear": _Api(
        _F_FIXED_MODE, "bilinear", True,
        deprecated='F.interpolate(..., mode="bilinear", align_corners=True)',
    ),
    "torch.nn.functional.upsample_nearest": _Api(
        _F_FIXED_MODE, "nearest", None, deprecated='F.interpolate(..., mode="nearest")'
    ),
}

TRIGGER = re.compile(r"psampl|interpolate")  # [Uu]psample*, UpsamplingBilinear2d, interpolate


@dataclass(frozen=True)
class UpsampleFacts:
    """An upsampling construct, from source or from a live module; values may be UNKNOWN."""

    api: str
    mode: Any = "nearest"
    align_corners: Any = None
    size_from_shape: Any = False  # True, False or UNKNOWN
    scale_factor: Any = None
    size: Any = None
    deprecated: str | None = None
    recompute_scale_factor: Any = None  # True: the output size sets the sampling step, as with size=
    #: the traced input's spatial size (a traced call knows it; source and a built layer do not)
    input_size: Any = UNKNOWN

    @property
    def linear(self) -> Any:
        """Whether the mode interpolates linearly (True/False/UNKNOWN)."""
        if self.mode is UNKNOWN:
            return True if self.align_corners is True else UNKNOWN
        return self.mode in LINEAR_MODES

    @property
    def what(self) -> str:
        short = self.api.rsplit(".", 1)[-1]
        if self.api.startswith("torch.nn.functional."):
            short = f"F.{short}"
        if self.api in APIS and APIS[self.api].mode is not None:  # UpsamplingBilinear2d, F.upsample_nearest
            return short
        mode = "mode unknown" if self.mode is UNKNOWN else f"mode={self.mode!r}"
        return f"{short}({mode})"


def _below_11(target: Target, severity: Severity) -> Severity | None:
    return severity if target.onnx and target.opset < 11 else None


class LinearUpsampleBeforeOpset11(Rule):
    """## What it does
    Checks for linear, bilinear or trilinear upsampling (`F.interpolate`, `nn.Upsample`, the
    deprecated `F.upsample`) with `align_corners=False` when the target's opset is below 11
    (bicubic does not export at all there: MC206). A traced call from a 1×1 map is exact in
    every mode, so tracing clears it.

    ## Why is this bad?
    Before opset 11 ONNX has only `Upsample`, whose linear mode maps coordinates differently
    from PyTorch's (`align_corners=False` samples at half-pixel centres). The export raises
    nothing, yet the runtimes compute something else: a bilinear scale-2 upsample differs from
    PyTorch by 0.93 in both ONNX Runtime and Caffe2 (measured, docs/evidence.md).

    ## Fix safety
    For the caffe2 target, `--fix` replaces a bilinear upsample on a 4-D input with
    `_ExactBilinearUpsample`, a helper class inserted once per file. With a power-of-two
    `scale_factor` (2, 4, 8) it is a depthwise transposed convolution with the fixed bilinear
    kernel after repeating the edge pixels: safe, exact for every input size, and so is the
    exported graph. With another factor or a `size=` it is a matrix product per axis with
    PyTorch's own weights for the traced input size: unsafe (`--unsafe-fixes`), since the
    exported graph holds those weights. Either way the result differs from `F.interpolate`
    only in summation order, so a model built from the file must confirm it (outputs within
    1e-6): without one it is held back. The `state_dict` does not change. Bicubic, trilinear
    and modes not known statically are left alone; for `--target onnx`, export at opset 11 or
    later instead (nothing is rewritten).
    """

    code = "MC201"
    predicts = (("onnxruntime", "mismatch", Severity.WARNING), ("caffe2", "mismatch", Severity.WARNING),
                ("ort_mobile", "mismatch", Severity.WARNING))
    name = "linear-upsample-before-opset-11"
    summary = "linear/bilinear/trilinear upsampling before opset 11 exports but computes something else"
    bad_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)\n"
    )
    good_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='nearest')\n"
    )

    def verdict(self, target: Target) -> Severity | None:
        return _below_11(target, Severity.ERROR)

    def cleared_by(self, facts: UpsampleFacts) -> bool:
        return _one_pixel(facts.input_size)

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.linear is False or facts.align_corners is True or facts.mode == "bicubic" or self.cleared_by(facts):
            return None  # bicubic does not export at all before opset 11: MC206
        certain = facts.linear is True and facts.align_corners is not UNKNOWN
        if certain:
            return Match(
                f"{facts.what} before opset 11: ONNX Upsample computes something else than "
                "PyTorch, silently (measured max diff 0.93 in ONNX Runtime and Caffe2)",
                fixable=facts.mode == "bilinear",  # modelcheck.fixers.upsampling: safe or, with a size, unsafe
            )
        return Match(
            f"{facts.what} may interpolate linearly (mode or align_corners not known "
            "statically); before opset 11 ONNX Upsample then computes something else",
            certain=False,
        )


class AlignCornersBeforeOpset11(Rule):
    """## What it does
    Checks for bilinear upsampling with `align_corners=True`, including `nn.UpsamplingBilinear2d`
    and `F.upsample_bilinear`, which imply it, when the target's opset is below 11.

    ## Why is this bad?
    `torch.onnx` refuses to export it before opset 11 ("Unsupported: ONNX export of operator
    upsample_bilinear2d, align_corners == True"), so the model does not export at all
    (measured, docs/evidence.md).

    ## Fix safety
    For the caffe2 target, `--fix` replaces the upsample with `_ExactBilinearUpsample`, a
    helper class inserted once per file that multiplies by PyTorch's own interpolation weights
    along each axis (opset 9 exports a matrix product). Unsafe (`--unsafe-fixes`): the sampling
    step `(in - 1) / (out - 1)` depends on the input size, so the exported graph holds the
    weights for the traced size only; PyTorch itself computes the same for every size. A model
    built from the file must confirm the outputs (within 1e-6); the `state_dict` does not change.
    """

    code = "MC202"
    predicts = (("export", "failed", Severity.WARNING),)
    name = "align-corners-before-opset-11"
    summary = "align_corners=True upsampling cannot be exported before opset 11"
    bad_example = "import torch.nn as nn\nup = nn.UpsamplingBilinear2d(scale_factor=2)\n"
    good_example = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='nearest')\n"

    def verdict(self, target: Target) -> Severity | None:
        return _below_11(target, Severity.ERROR)

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.linear is False:
            return None
        if facts.align_corners is True:
            return Match(
                f"{facts.what} with align_corners=True cannot be exported before opset 11 "
                "(torch.onnx: \"Unsupported: ONNX export of operator upsample_bilinear2d, "
                "align_corners == True\")",
                fixable=facts.mode == "bilinear",  # modelcheck.fixers.upsampling: unsafe (size-specific weights)
            )
        if facts.align_corners is UNKNOWN:
            return Match(
                f"{facts.what} may use align_corners=True (not known statically), which cannot "
                "be exported before opset 11",
                certain=False,
            )
        return None


class ShapeSizedUpsample(Rule):
    """## What it does
    Checks for upsampling to a size computed from a tensor's shape (`size=x.size()[2:]`,
    `x.shape[-2:]`, or a variable holding one) when the target's opset is below 11.

    ## Why is this bad?
    The exporter turns such a size into scales through shape arithmetic in the graph, and
    before opset 11 ONNX `Upsample` takes only scales. With a linear mode the runtimes then
    compute something else than PyTorch, with no error: a bilinear resize from 16×16 to a
    shape-derived 33×33 at opset 9 differs by 0.80 in ONNX Runtime and 1.48 in Caffe2. With
    `mode='nearest'` the same graph is exact in both runtimes, so that case is only a note
    (measured, docs/evidence.md). Use a constant `scale_factor` when the ratio is fixed by the
    architecture, or opset 11 or later with a runtime that has `Resize`.

    ## Fix safety
    Rewritten only together with MC201 or MC202 on the same bilinear call, by the same
    `_ExactBilinearUpsample` helper: unsafe (`--unsafe-fixes`), since with a `size=` the
    interpolation weights depend on the input size and the exported graph holds them for the
    traced size. A model built from the file must confirm the outputs (within 1e-6).
    """

    code = "MC203"
    predicts = (("onnxruntime", "mismatch", Severity.WARNING), ("caffe2", "mismatch", Severity.WARNING),
                ("ort_mobile", "mismatch", Severity.WARNING), ("second_size", "mismatch", Severity.WARNING),
                ("second_size", "failed", Severity.WARNING))
    size_dependent = True
    name = "shape-sized-upsample"
    summary = "upsampling to a size computed from a tensor's shape, before opset 11"
    bad_example = (
        "import torch.nn.functional as F\n"
        "def fuse(x, y):\n"
        "    return F.interpolate(x, size=y.size()[2:], mode='bilinear', align_corners=False)\n"
    )
    good_example = (
        "import torch.nn.functional as F\n"
        "def fuse(x, y):\n    return F.interpolate(x, scale_factor=2, mode='nearest')\n"
    )

    def verdict(self, target: Target) -> Severity | None:
        if not target.onnx or target.opset >= 11:
            return None
        return Severity.ERROR if target.name == "caffe2" else Severity.WARNING

    def cleared_by(self, facts: UpsampleFacts) -> bool:
        return _one_pixel(facts.input_size)

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.size_from_shape is False or facts.mode == "bicubic" or self.cleared_by(facts):
            return None  # bicubic does not export at all before opset 11: MC206
        if facts.linear is False:
            return Match(
                f"{facts.what} to a size {_maybe(facts)}computed from a tensor's shape exports "
                "as shape-derived Upsample scales before opset 11; for nearest that was measured "
                "exact in ONNX Runtime and Caffe2 (a note, not a problem)",
                at_most=Severity.INFO,
            )
        if facts.size_from_shape is True and facts.linear is True:
            return Match(
                f"{facts.what} to a size computed from a tensor's shape: before opset 11 the "
                "exported shape-derived scales compute something else than PyTorch (measured max "
                "diff 0.80 in ONNX Runtime, 1.48 in Caffe2)"
            )
        mode = ", in a mode that may be linear" if facts.linear is UNKNOWN else ""
        return Match(
            f"{facts.what} to a size {_maybe(facts)}computed from a tensor's shape{mode} (not known "
            "statically); before opset 11 a linear resize to a shape-derived size differs from "
            "PyTorch (measured max diff 0.80 in ONNX Runtime, 1.48 in Caffe2)",
            certain=False,
        )


def _one_pixel(size: Any) -> bool:
    """Was the traced input one pixel (1×1)? Every mode then repeats it, and so does ONNX Upsample at
    any opset: the image-pooling branch of an ASPP (measured exact, tests/test_evidence.py)."""
    return isinstance(size, tuple) and bool(size) and all(length == 1 for length in size)


def _maybe(facts: UpsampleFacts) -> str:
    return "" if facts.size_from_shape is True else "that may be "


class BicubicBeforeOpset11(Rule):
    """## What it does
    Checks for bicubic upsampling (`F.interpolate(..., mode="bicubic")`, `nn.Upsample`) when the
    target's opset is below 11.

    ## Why is this bad?
    ONNX has no cubic resize before opset 11 (`Upsample` knows nearest and linear only), so
    `torch.onnx` refuses the export: "Exporting the operator 'aten::upsample_bicubic2d' to ONNX
    opset version 9 is not supported". From opset 11 it exports as `Resize` (cubic) and ONNX
    Runtime matches PyTorch to 2.4e-07 (measured, docs/evidence.md); Caffe2 has no `Resize` at
    all (MC204).

    ## Fix safety
    There is no automatic fix. For `--target onnx`, export at opset 11 or later. For Caffe2,
    bilinear upsampling (which `--fix` makes exact at opset 9, MC201) computes something else
    than bicubic: a retraining matter.
    """

    code = "MC206"
    predicts = (("export", "failed", Severity.WARNING),)
    name = "bicubic-before-opset-11"
    summary = "bicubic upsampling cannot be exported before opset 11"
    bad_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='bicubic', align_corners=False)\n"
    )
    good_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='nearest')\n"
    )

    def verdict(self, target: Target) -> Severity | None:
        return _below_11(target, Severity.ERROR)

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.mode != "bicubic" or facts.align_corners is True:  # align_corners=True: MC202 says it
            return None
        return Match(f"{facts.what} cannot be exported before opset 11 (torch.onnx: \"Exporting the operator "
                     "'aten::upsample_bicubic2d' to ONNX opset version 9 is not supported\")")


class ResizeInCaffe2(Rule):
    """## What it does
    Checks for any upsampling or resize (every mode) when the target is Caffe2 at opset 11 or
    later.

    ## Why is this bad?
    From opset 11 `torch.onnx` exports every upsample as `Resize`, and the Caffe2 ONNX backend
    has no `Resize`: conversion fails, for nearest and bilinear alike (measured,
    docs/evidence.md).

    ## Fix safety
    There is no automatic fix: the cure is the export setting. Export the caffe2 target at
    opset 9 (the default), where nearest upsampling with a constant scale works and `--fix` can
    make bilinear upsampling exact (MC201), or use a fixed-kernel `nn.ConvTranspose2d`.
    """

    code = "MC204"
    predicts = (("caffe2", "failed", Severity.WARNING), ("caffe2", "crashed", Severity.WARNING))
    name = "resize-in-caffe2"
    summary = "any resize at opset >= 11 fails to convert to Caffe2 (no Resize operator)"
    bad_example = "import torch.nn as nn\nup = nn.Upsample(scale_factor=2, mode='nearest')\n"
    good_example = "import torch.nn as nn\nup = nn.ConvTranspose2d(8, 8, 2, stride=2)\n"
    example_target = "caffe2@11"

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if target.name == "caffe2" and target.opset >= 11 else None

    def match(self, facts: UpsampleFacts) -> Match | None:
        return Match(
            f"{facts.what} exports as Resize from opset 11; the Caffe2 backend has no Resize and "
            "conversion fails"
        )


class DeprecatedUpsample(Rule):
    """## What it does
    Checks for the deprecated aliases `F.upsample`, `F.upsample_bilinear` and
    `F.upsample_nearest`.

    ## Why is this bad?
    They are deprecated aliases of `F.interpolate` and warn on every call; `upsample_bilinear`
    silently means `align_corners=True`, which does not export before opset 11 (MC202).

    ## Fix safety
    `--fix` renames the call to `F.interpolate` and adds the mode and `align_corners` the alias
    implied (`F.upsample_bilinear(x, ...)` becomes `F.interpolate(x, ..., mode="bilinear",
    align_corners=True)`). Safe, and exact by construction: the alias calls exactly that, so it
    applies without a model. Calls through another alias, a name imported by itself, or with
    `*args`/`**kwargs` are left alone.
    """

    code = "MC205"
    covers = ()  # a deprecated name, not an outcome: the table speaks for what the call does
    name = "deprecated-upsample"
    summary = "F.upsample, F.upsample_bilinear and F.upsample_nearest are deprecated"
    bad_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.upsample_nearest(x, scale_factor=2)\n"
    )
    good_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='nearest')\n"
    )

    def verdict(self, target: Target) -> Severity | None:
        return Severity.INFO

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.deprecated is None:
            return None
        return Match(f"{facts.api.rsplit('.', 1)[-1]} is deprecated: use {facts.deprecated}")


class BilinearFractionalScale(Rule):
    """## What it does
    Checks for bilinear upsampling (`F.interpolate`, `nn.Upsample`) with `align_corners=False`
    and a `scale_factor` that is not a whole number (1.5, 0.5, `(2, 2.5)`) when the target is
    ExecuTorch (XNNPACK), LiteRT or Core ML.

    ## Why is this bad?
    Given a `scale_factor`, PyTorch steps through the input by `1 / scale_factor`; the output
    has `floor(size × scale_factor)` pixels. XNNPACK, to which ExecuTorch delegates the
    bilinear resize, steps by input size / output size instead. The two agree only when size ×
    scale is a whole number: a 17×17 map upsampled by 1.5 (25×25) differs from PyTorch by 0.57
    in ExecuTorch 1.4.1, with no error, while the same model with `size=` or
    `recompute_scale_factor=True` (which step by the size ratio in PyTorch too) or
    `align_corners=True` matches (measured, docs/targets/executorch.md). So the finding is
    certain only where tracing saw the input size and size × factor is not whole there; read
    from source it says "may", and a traced size where it is whole refutes it. LiteRT's own
    RESIZE_BILINEAR steps the same way, with or without XNNPACK: 0.57 off on the same model in
    ai-edge-litert 2.3.0 (docs/targets/litert.md). A whole-number factor
    is exact at every size. coremltools 9.0 refuses to convert the same resize when size ×
    scale is not a whole number ("align_corners = False with float output size is not
    supported", measured, docs/targets/coreml.md).

    ## Fix safety
    There is no automatic fix: no `F.interpolate` argument keeps PyTorch's numbers and XNNPACK's
    at once. Passing `size=` or `recompute_scale_factor=True` changes what PyTorch computes
    (to what the runtime computes): right for a model trained that way, a retraining matter
    otherwise. Feeding only sizes whose product with the factor is a whole number (even sizes
    for 1.5 and 0.5) avoids it.
    """

    code = "MC207"
    covers = ({"mode": "bilinear", "resize_by": "scale_factor", "align_corners": False},)
    predicts = (("executorch", "mismatch", Severity.WARNING), ("litert", "mismatch", Severity.WARNING),
                ("coreml/export", "failed", Severity.WARNING))
    name = "bilinear-fractional-scale"
    summary = ("bilinear upsampling by a non-integer scale_factor computes something else in XNNPACK/LiteRT "
               "and may not convert to Core ML")
    bad_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=1.5, mode='bilinear', align_corners=False)\n"
    )
    good_example = (
        "import torch.nn.functional as F\n"
        "def up(x):\n    return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)\n"
    )
    example_target = "executorch"

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if target.name in ("executorch", "litert", "coreml") else None

    def match(self, facts: UpsampleFacts) -> Match | None:
        bilinear = UNKNOWN if facts.mode is UNKNOWN else facts.mode == "bilinear"
        exact = (facts.align_corners, facts.recompute_scale_factor)
        fractional = _fractional(facts.scale_factor)
        if bilinear is False or fractional is False or True in exact:
            return None
        factor = f"scale_factor={facts.scale_factor!r}"
        if bilinear is True and fractional is True and UNKNOWN not in exact:
            whole = _whole_at(facts.input_size, facts.scale_factor)
            if whole is True:  # traced at a size where size × factor is whole: the runtimes agree there
                return None
            where = (f"at the traced size {'×'.join(map(str, facts.input_size))}" if whole is False
                     else "unless size × factor is a whole number (the input size decides)")
            return Match(
                f"{facts.what} with {factor}: XNNPACK and LiteRT's RESIZE_BILINEAR interpolate by the "
                f"input/output size ratio, not by the factor, and compute something else than PyTorch {where} "
                "(measured max diff 0.57 in ExecuTorch and in LiteRT on a 17×17 input at 1.5); coremltools "
                "refuses to convert it then",
                certain=whole is False,
            )
        unknown = "the mode" if bilinear is UNKNOWN else "the scale factor" if fractional is UNKNOWN else \
            "align_corners or recompute_scale_factor"
        return Match(
            f"{facts.what} may be a bilinear resize by a non-integer scale factor ({unknown} not known "
            "statically), which XNNPACK and LiteRT compute by the size ratio instead: a mismatch with PyTorch "
            "(and coremltools may refuse to convert it)",
            certain=False,
        )


def _whole_at(size: Any, scale: Any) -> Any:
    """Is size × scale a whole number on every axis at the traced size: True, False or UNKNOWN."""
    if not isinstance(size, tuple) or not size:
        return UNKNOWN
    scales = tuple(scale) if isinstance(scale, (list, tuple)) else (scale,) * len(size)
    if len(scales) != len(size) or not all(isinstance(f, (int, float)) for f in scales):
        return UNKNOWN
    return all(float(length * f).is_integer() for length, f in zip(size, scales, strict=True))


def _fractional(scale: Any) -> Any:
    """Is a scale factor (a number or one per axis) not a whole number: True, False or UNKNOWN."""
    if scale is None:
        return False
    if isinstance(scale, (list, tuple)):
        found = [_fractional(s) for s in scale]
        return True if True in found else UNKNOWN if UNKNOWN in found else False
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        return not float(scale).is_integer()
    return UNKNOWN


RULES: tuple[Rule, ...] = (
    LinearUpsampleBeforeOpset11(),
    AlignCornersBeforeOpset11(),
    ShapeSizedUpsample(),
    ResizeInCaffe2(),
    DeprecatedUpsample(),
    BicubicBeforeOpset11(),
    BilinearFractionalScale(),
)


_API_NAMES = tuple(APIS)
#: does an expression read a tensor's shape: (expression, the function's assignments, names seen)
ShapeTest = Callable[[Any, Mapping[str, Sequence[Any]], set[str]], bool]


def _is_shape_expr(
    expr: cst.BaseExpression, assigned: Mapping[str, Sequence[cst.BaseExpression]], seen: set[str]
) -> bool:
    """Does ``expr`` read a tensor's shape (``.shape``, ``.size()``), directly or via a local?"""
    found = False

    class _Visitor(cst.CSTVisitor):
        def visit_Attribute(self, node: cst.Attribute) -> None:
            nonlocal found
            if node.attr.value == "shape":
                found = True

        def visit_Call(self, node: cst.Call) -> None:
            nonlocal found
            if isinstance(node.func, cst.Attribute) and node.func.attr.value == "size":
                found = True

        def visit_Name(self, node: cst.Name) -> None:
            nonlocal found
            if node.value in assigned and node.value not in seen:
                seen.add(node.value)
                if any(_is_shape_expr(v, assigned, seen) for v in assigned[node.value]):
                    found = True

    walk(expr, _Visitor())
    return found


def facts_from_call(
    source: SourceFile, call: cst.Call, assigned: Mapping[str, Sequence[cst.BaseExpression]],
    is_shape_expr: ShapeTest = _is_shape_expr,
) -> UpsampleFacts | None:
    """UpsampleFacts for an upsampling call or constructor, or None if it is not one.

    ``assigned`` holds the current function's local assignments (``ScopedVisitor``): they say
    whether a size came from a shape and whether a local name is an alias of an API.
    ``is_shape_expr`` is the one question asked of the tree itself: ``static.fast_rules``
    passes its ``ast`` port and runs this same function on ``ast`` calls.
    """
    hit = source.api_call(call, _API_NAMES, assigned)
    if hit is None:
        return None
    api_name, _, args, partial = hit
    api = APIS[api_name]
    bound, opaque = bind_arguments(args, api.params)
    fallback = UNKNOWN if opaque or partial else None

    def value(name: str, default: Any) -> Any:
        if name in bound:
            return source.value(bound[name])
        return default if fallback is None else fallback

    size_expr = bound.get("size")
    if size_expr is None:
        size_from_shape: Any = False if fallback is None else UNKNOWN
        size = None
    else:
        size = source.value(size_expr)
        if size is not UNKNOWN:
            size_from_shape = False
        elif is_shape_expr(size_expr, assigned, set()):
            size_from_shape = True
        else:
            size_from_shape = UNKNOWN
    return UpsampleFacts(
        api=api_name,
        mode=api.mode if api.mode is not None else value("mode", "nearest"),
        align_corners=api.align_corners if api.mode is not None else value("align_corners", None),
        size_from_shape=size_from_shape,
        scale_factor=value("scale_factor", None),
        size=size,
        deprecated=api.deprecated,
        recompute_scale_factor=value("recompute_scale_factor", None) if "recompute_scale_factor" in api.params
        else None,
    )


def extract(source: SourceFile) -> Iterator[tuple[cst.Call, UpsampleFacts]]:
    """Every upsampling call in the file with its facts."""
    return calls_with_facts(source, facts_from_call)


def describe(facts: UpsampleFacts) -> str:
    """``Upsample(mode='nearest', align_corners=None)``: the live values the rules decided on."""
    text = facts.what[:-1] + f", align_corners={facts.align_corners!r}"
    if facts.size_from_shape is True:
        text += ", size from a tensor's shape"
    return text + ")"


def layer_facts(module: Any, api: str) -> UpsampleFacts:
    """UpsampleFacts of a built upsampling layer (its size is a constant)."""
    return UpsampleFacts(api=api, mode=module.mode, align_corners=module.align_corners, size_from_shape=False,
                         scale_factor=plain(module.scale_factor), size=plain(module.size),
                         recompute_scale_factor=getattr(module, "recompute_scale_factor", None))


def call_facts(api: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], tracing: bool) -> UpsampleFacts:
    """UpsampleFacts of one traced call; under tracing a size held as tensors came from a shape."""
    spec = APIS[api]
    bound = bind_call(spec.params, args, kwargs)
    size = bound.get("size")
    from_shape: Any = False if size is None else _holds_tensor(size) if tracing else UNKNOWN
    return UpsampleFacts(
        api=api,
        mode=spec.mode if spec.mode is not None else bound.get("mode", "nearest"),
        align_corners=spec.align_corners if spec.mode is not None else bound.get("align_corners"),
        size_from_shape=from_shape, scale_factor=plain(bound.get("scale_factor")), size=plain(size),
        deprecated=spec.deprecated, recompute_scale_factor=bound.get("recompute_scale_factor"),
        input_size=_spatial(bound.get("input")),
    )


def _spatial(tensor: Any) -> Any:
    """The spatial size (after N, C) of a traced input, or UNKNOWN."""
    shape = getattr(tensor, "shape", None)
    return tuple(int(v) for v in shape[2:]) if shape is not None and len(shape) > 2 else UNKNOWN


def _holds_tensor(value: Any) -> bool:
    if hasattr(value, "dim") and hasattr(value, "numel"):  # a tensor (torch is not imported here)
        return True
    return isinstance(value, (list, tuple)) and any(_holds_tensor(v) for v in value)


FAMILY = Family(
    name="upsampling", rules=RULES, facts_type=UpsampleFacts, trigger=TRIGGER, extract=extract, describe=describe,
    layer_apis=frozenset(api for api in APIS if is_layer(api)), layer_facts=layer_facts,
    call_apis=frozenset(api for api in APIS if not is_layer(api)), call_facts=call_facts,
    failing_ops=re.compile(r"upsampl|interpolat|resize", re.IGNORECASE),
)
