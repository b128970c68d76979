"""MC2xx: upsampling that ONNX export or the Caffe2 backend gets wrong.

The seed's author rewrote every upsample as ``nn.ConvTranspose2d`` by hand. Measured on this
project's machines (docs/evidence.md): at opset 9 a bilinear ``F.interpolate`` exports without error
and then differs from PyTorch by 0.88 in both ONNX Runtime and Caffe2; ``align_corners=True``
does not export at all before opset 11; from opset 11 the exporter emits ``Resize``, which the
Caffe2 backend cannot convert.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import libcst as cst
from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments, calls_with_facts, walk
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
    return severity if target.opset < 11 else None


class LinearUpsampleBeforeOpset11(Rule):
    code = "MC201"
    name = "linear-upsample-before-opset-11"
    summary = "linear/bilinear/bicubic upsampling before opset 11 exports but computes something else"
    rationale = (
        "Before opset 11 ONNX has only Upsample, whose linear mode uses a different coordinate "
        "mapping from PyTorch's (align_corners=False uses half-pixel centres). The export raises "
        "nothing, yet a bilinear scale-2 upsample measured here differs from PyTorch by 0.88 in "
        "both ONNX Runtime and Caffe2. Fix: a fixed-kernel depthwise ConvTranspose2d that "
        "reproduces bilinear interpolation exactly (modelcheck --fix), or opset >= 11 with a "
        "runtime that has Resize (not Caffe2)."
    )
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

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.linear is False or facts.align_corners is True:
            return None
        certain = facts.linear is True and facts.align_corners is not UNKNOWN
        if certain:
            return Match(
                f"{facts.what} before opset 11: ONNX Upsample computes something else than "
                "PyTorch, silently (measured max diff 0.88 in ONNX Runtime and Caffe2)",
                fixable=facts.mode == "bilinear",  # modelcheck.fixers.upsampling: safe or, with a size, unsafe
            )
        return Match(
            f"{facts.what} may interpolate linearly (mode or align_corners not known "
            "statically); before opset 11 ONNX Upsample then computes something else",
            certain=False,
        )


class AlignCornersBeforeOpset11(Rule):
    code = "MC202"
    name = "align-corners-before-opset-11"
    summary = "align_corners=True upsampling cannot be exported before opset 11"
    rationale = (
        "torch.onnx refuses upsample_bilinear2d with align_corners=True before opset 11 "
        "(\"Unsupported: ONNX export of operator upsample_bilinear2d, align_corners == True\"). "
        "nn.UpsamplingBilinear2d and F.upsample_bilinear imply align_corners=True. Fix: an exact "
        "fixed-kernel equivalent (modelcheck --fix), or opset >= 11 where the runtime has Resize."
    )
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
    code = "MC203"
    name = "shape-sized-upsample"
    summary = "upsampling to a size computed from a tensor's shape, before opset 11"
    rationale = (
        "size=x.size()[2:] (or x.shape[-2:], or a variable holding one) makes the exporter turn "
        "the size into scales through shape arithmetic in the graph; before opset 11 ONNX "
        "Upsample takes only scales. With a linear mode the runtimes then drift further from "
        "PyTorch than with a constant scale: measured here with a bilinear resize at opset 9, "
        "max diff 0.70 in ONNX Runtime and 1.29 in Caffe2 (1.42 when 16x16 goes to 33x33), no "
        "error. With mode='nearest' the same graph was measured exact in both runtimes, so that "
        "case is only a note. Fix: a constant scale_factor when the ratio is fixed by the "
        "architecture, or opset >= 11 with a runtime that has Resize."
    )
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
        if target.opset >= 11:
            return None
        return Severity.ERROR if target.name == "caffe2" else Severity.WARNING

    def match(self, facts: UpsampleFacts) -> Match | None:
        if facts.size_from_shape is False:
            return None
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
                "diff 0.70 in ONNX Runtime, 1.29 in Caffe2)"
            )
        mode = ", in a mode that may be linear" if facts.linear is UNKNOWN else ""
        return Match(
            f"{facts.what} to a size {_maybe(facts)}computed from a tensor's shape{mode} (not known "
            "statically); before opset 11 a linear resize to a shape-derived size differs from "
            "PyTorch (measured max diff 0.70 in ONNX Runtime, 1.29 in Caffe2)",
            certain=False,
        )


def _maybe(facts: UpsampleFacts) -> str:
    return "" if facts.size_from_shape is True else "that may be "


class ResizeInCaffe2(Rule):
    code = "MC204"
    name = "resize-in-caffe2"
    summary = "any resize at opset >= 11 fails to convert to Caffe2 (no Resize operator)"
    rationale = (
        "From opset 11 torch.onnx exports every upsample as Resize. The Caffe2 ONNX backend has "
        "no Resize, so conversion fails (measured for nearest and bilinear alike). Fix: export "
        "the caffe2 target at opset 9, where nearest upsampling with a constant scale works, and "
        "make linear upsampling exact with a fixed-kernel ConvTranspose2d (modelcheck --fix)."
    )
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
    code = "MC205"
    name = "deprecated-upsample"
    summary = "F.upsample, F.upsample_bilinear and F.upsample_nearest are deprecated"
    rationale = (
        "These names are deprecated aliases of F.interpolate and warn on every call; "
        "upsample_bilinear silently means align_corners=True, which does not export before opset "
        "11. Spell the call as F.interpolate with an explicit mode and align_corners."
    )
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


RULES: tuple[Rule, ...] = (
    LinearUpsampleBeforeOpset11(),
    AlignCornersBeforeOpset11(),
    ShapeSizedUpsample(),
    ResizeInCaffe2(),
    DeprecatedUpsample(),
)


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
    source: SourceFile, call: cst.Call, assigned: Mapping[str, Sequence[cst.BaseExpression]]
) -> UpsampleFacts | None:
    """UpsampleFacts for an upsampling call or constructor, or None if it is not one.

    ``assigned`` holds the current function's local assignments (``ScopedVisitor``): they say
    whether a size came from a shape and whether a local name is an alias of an API.
    """
    hit = source.api_call(call, tuple(APIS), assigned)
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
        elif _is_shape_expr(size_expr, assigned, set()):
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
    )


def extract(source: SourceFile) -> Iterator[tuple[cst.Call, UpsampleFacts]]:
    """Every upsampling call in the file with its facts."""
    return calls_with_facts(source, facts_from_call)
