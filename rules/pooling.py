"""MC3xx: pooling with ``ceil_mode=True``.

The seed's author had to turn ``nn.MaxPool2d(2, 2, ceil_mode=True)`` into ``ceil_mode=False``
by hand. Measured on this project's machines: at opset 10 and later the Caffe2 backend ignores
``ceil_mode`` and silently returns a smaller map (32×32 instead of 34×34); at opset 9 the
exporter emulates it with padding computed for the traced input size only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import libcst as cst
from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments, calls_with_facts
from modelcheck.targets import Target

_MAX = ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode")
_AVG1 = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad")
_AVG = (*_AVG1, "divisor_override")
_F_MAX = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_F_AVG = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
          "divisor_override")

#: qualified name → positional parameter names, from each function's signature in torch 2.x
SIGNATURES: dict[str, tuple[str, ...]] = {
    **{f"torch.nn.MaxPool{d}d": _MAX for d in (1, 2, 3)},
    "torch.nn.AvgPool1d": _AVG1,
    "torch.nn.AvgPool2d": _AVG,
    "torch.nn.AvgPool3d": _AVG,
    **{f"torch.nn.functional.max_pool{d}d": _F_MAX for d in (1, 2, 3)},
    **{f"torch.nn.functional.max_pool{d}d_with_indices": _F_MAX for d in (1, 2, 3)},
    **{f"torch.max_pool{d}d": _F_MAX[:6] for d in (1, 2, 3)},
    "torch.max_pool1d_with_indices": _F_MAX[:6],
    "torch.nn.functional.avg_pool1d": _F_AVG[:6],
    "torch.nn.functional.avg_pool2d": _F_AVG,
    "torch.nn.functional.avg_pool3d": _F_AVG,
    "torch.avg_pool1d": _F_AVG[:6],
}

# Where a finding can be: a mention of ceil_mode, or a pool name (an alias, a partial, a call)
# unless it is a plain call with fewer positional arguments than it takes to reach ceil_mode
# and no *args/**kwargs (nn.MaxPool2d(3, 2, 1) cannot set it). Derived from SIGNATURES; the
# static pre-screen runs it on code with strings and comments masked out.
_BEFORE_CEIL = min(params.index("ceil_mode") for params in SIGNATURES.values())
_ARG = r"(?:[^,()*]|\([^()]*\))*"  # one argument: no comma or star, parentheses one deep
_TOO_FEW = rf"\s*\({_ARG}(?:,{_ARG}){{0,{_BEFORE_CEIL - 1}}}\)"
TRIGGER = re.compile(rf"ceil_mode|[Pp]ool[123]d\w*(?!\w)(?!{_TOO_FEW})")


@dataclass(frozen=True)
class PoolFacts:
    """A pooling construct, from source or from a live module; values may be UNKNOWN."""

    api: str
    ceil_mode: Any
    kernel_size: Any = UNKNOWN
    stride: Any = UNKNOWN
    padding: Any = 0
    dilation: Any = 1
    certain_api: bool = True  # False when the callee is only maybe this pool (an alias with choices)


class CeilModePooling(Rule):
    code = "MC301"
    name = "ceil-mode-pooling"
    summary = "pooling with ceil_mode=True: Caffe2 ignores it from opset 10 (smaller output, no error)"
    rationale = (
        "PyTorch rounds the output size up when ceil_mode=True. ONNX MaxPool/AveragePool only "
        "carry ceil_mode from opset 10, and the Caffe2 backend ignores the attribute: measured "
        "here, MaxPool2d(2, 2, ceil_mode=True) on a 33×33 map gave Caffe2 a 16×16 map instead of "
        "17×17 at opset 11 (32×32 instead of 34×34 after upsampling), silently. At opset 9 the "
        "exporter emulates ceil_mode with extra padding computed for the traced input size, so "
        "the exported graph is only right for that size. ONNX Runtime honours ceil_mode from "
        "opset 10. Fix: ceil_mode=False with explicit padding that gives the same output size, "
        "or an input size for which ceil and floor agree."
    )
    bad_example = "import torch.nn as nn\npool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)\n"
    good_example = "import torch.nn as nn\npool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=False)\n"

    def verdict(self, target: Target) -> Severity | None:
        if target.name == "caffe2":
            return Severity.ERROR if target.opset >= 10 else Severity.WARNING
        return Severity.WARNING if target.opset < 10 else None

    def match(self, facts: PoolFacts) -> Match | None:
        short = facts.api.rsplit(".", 1)[-1]
        if facts.ceil_mode is True:
            what = f"{short}(ceil_mode=True)"
            if not facts.certain_api:
                what = f"ceil_mode=True to a callee that may be {short}"
            return Match(
                f"{what}: Caffe2 ignores ceil_mode from opset 10 and returns a "
                "smaller output without error; at opset 9 the exporter pads for the traced input "
                "size only",
                certain=facts.certain_api,
                fixable=True,
            )
        if facts.ceil_mode is UNKNOWN:
            return Match(
                f"{short} may use ceil_mode=True (its value is not known statically); Caffe2 "
                "ignores ceil_mode from opset 10",
                certain=False,
            )
        return None


RULES: tuple[Rule, ...] = (CeilModePooling(),)


def facts_from_call(
    source: SourceFile, call: cst.Call, assigned: Mapping[str, Sequence[cst.BaseExpression]] | None = None
) -> PoolFacts | None:
    """PoolFacts for a pooling call or constructor, or None if ``call`` is not one.

    Sees through local aliases (``pool_fn = nn.AvgPool2d if ... else Same; pool_fn(2, ceil_mode=True)``,
    then only maybe a pool) and ``functools.partial(nn.MaxPool2d, ...)``.
    """
    hit = source.api_call(call, tuple(SIGNATURES), assigned or {})
    if hit is None:
        return None
    api, certain, args, partial = hit
    bound, opaque = bind_arguments(args, SIGNATURES[api])
    default = UNKNOWN if opaque or partial else None

    def value(name: str, fallback: Any) -> Any:
        if name in bound:
            return source.value(bound[name])
        return fallback if default is None else default

    kernel = value("kernel_size", UNKNOWN)
    return PoolFacts(
        api=api,
        ceil_mode=value("ceil_mode", False),
        kernel_size=kernel,
        stride=value("stride", kernel),
        padding=value("padding", 0),
        dilation=value("dilation", 1),
        certain_api=certain,
    )


def extract(source: SourceFile) -> Iterator[tuple[cst.Call, PoolFacts]]:
    """Every pooling call in the file with its facts."""
    return calls_with_facts(source, facts_from_call)
