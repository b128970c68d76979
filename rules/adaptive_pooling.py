"""MC6xx: adaptive pooling that the exporter or Caffe2 cannot take.

Measured on this project's machines (docs/evidence.md, re-measured by tests/test_evidence.py):
``F.adaptive_avg_pool2d(x, 1)`` and ``nn.AdaptiveAvgPool2d(1)`` — the image pooling of every
DeepLabV3-style ASPP and most classification heads — export as ``GlobalAveragePool``, which ONNX
Runtime runs and Caffe2 1.7.1 fails on at every opset ("kernel_[dim]. If you are doing convolution
or pooling, you will need to set explicitly the kernel size"); ``x.mean((-2, -1), keepdim=True)``
exports as ``ReduceMean`` and runs in both. An output size that does not divide the input size
(5 on a 33×33 map) does not export at all with the TorchScript exporter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family, bind_call, plain
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments, calls_with_facts, cst
from modelcheck.targets import Target

_KINDS = {"Avg": "avg", "Max": "max"}
#: qualified name → positional parameter names, from each signature in torch 2.x
APIS: dict[str, tuple[str, ...]] = {
    **{f"torch.nn.Adaptive{kind}Pool{d}d": ("output_size",) for kind in _KINDS for d in (1, 2, 3)},
    **{f"torch.nn.functional.adaptive_{kind.lower()}_pool{d}d": ("input", "output_size")
       for kind in _KINDS for d in (1, 2, 3)},
}
TRIGGER = re.compile(r"[Aa]daptive_?(?:[Aa]vg|[Mm]ax)_?[Pp]ool")


@dataclass(frozen=True)
class AdaptivePoolFacts:
    """An adaptive pooling construct; ``input_size`` is the traced spatial size (UNKNOWN statically)."""

    api: str
    output_size: Any
    input_size: Any = UNKNOWN

    @property
    def kind(self) -> str:
        """``avg`` or ``max``."""
        return "max" if "max" in self.api.lower() else "avg"

    @property
    def dims(self) -> int:
        return int(self.api[-2])

    @property
    def outputs(self) -> Any:
        """The output size per spatial dim (None keeps that dim), or UNKNOWN."""
        size = self.output_size
        if size is UNKNOWN:
            return UNKNOWN
        return tuple(size) if isinstance(size, (tuple, list)) else (size,) * self.dims

    @property
    def what(self) -> str:
        short = self.api.rsplit(".", 1)[-1]
        prefix = "F." if self.api.startswith("torch.nn.functional.") else ""
        size = "?" if self.output_size is UNKNOWN else repr(self.output_size)
        return f"{prefix}{short}({size})"


class GlobalAveragePoolInCaffe2(Rule):
    """## What it does
    Checks for adaptive average pooling to 1×1 (`F.adaptive_avg_pool2d(x, 1)`,
    `nn.AdaptiveAvgPool2d(1)`, and their 1-d and 3-d forms) when the target is Caffe2: the image
    pooling of every DeepLabV3-style ASPP and of most classification heads. An output size not
    known statically is left to the dynamic pass, which sees the value.

    ## Why is this bad?
    It exports as `GlobalAveragePool` at every opset. ONNX Runtime runs it; the Caffe2 backend
    converts it and then fails at run time ("[enforce fail at conv_pool_op_base.h:157]
    kernel_[dim]. If you are doing convolution or pooling, you will need to set explicitly the
    kernel size."), at opsets 9 and 11 (measured, docs/evidence.md).
    `x.mean((-2, -1), keepdim=True)` computes the same, exports as `ReduceMean` and runs in
    Caffe2.

    ## Fix safety
    `--fix` writes `x.mean((-2, -1), keepdim=True)` for the functional call (`(-1,)` in 1-d,
    `(-3, -2, -1)` in 3-d) and, for the layer, an instance of `_GlobalAvgPool`, a helper module
    inserted once per file whose forward is that mean (no parameters or buffers, so checkpoints
    load unchanged). Safe: the same value for every input size, and the exported graph is not
    tied to one. The sum runs in another order, so a model built from the file must confirm the
    outputs to float rounding; without one it is held back. Calls through an alias or with
    `*args`/`**kwargs` are left alone.
    """

    code = "MC601"
    predicts = (("caffe2", "failed", Severity.WARNING),)
    name = "global-average-pool-in-caffe2"
    summary = "adaptive average pooling to 1×1 exports as GlobalAveragePool, which Caffe2 cannot run"
    bad_example = (
        "import torch.nn.functional as F\n"
        "def head(x):\n    return F.adaptive_avg_pool2d(x, 1)\n"
    )
    good_example = (
        "def head(x):\n    return x.mean((-2, -1), keepdim=True)\n"
    )

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if target.name == "caffe2" else None

    def match(self, facts: AdaptivePoolFacts) -> Match | None:
        if facts.kind != "avg":
            return None
        outputs = facts.outputs
        # an output size not known statically (``AdaptiveAvgPool2d(s)`` for s in 1, 2, 3, 6) is left to
        # the dynamic pass, which sees the value: flagging every such pool would cry wolf
        if outputs is not UNKNOWN and all(size == 1 for size in outputs):
            return Match(f"{facts.what} exports as GlobalAveragePool, which Caffe2 fails to run (\"kernel_[dim]. "
                         "... you will need to set explicitly the kernel size\"); x.mean((-2, -1), keepdim=True) "
                         "runs", fixable=True)
        return None


class AdaptivePoolNotDividing(Rule):
    """## What it does
    Reports adaptive pooling (average or max) whose output size does not divide the input size
    it received, e.g. `nn.AdaptiveAvgPool2d(5)` on a 33×33 map. Only the traced input size is
    known, so only the dynamic pass reports it, for the TorchScript exporter.

    ## Why is this bad?
    The TorchScript exporter writes adaptive pooling as a fixed `AveragePool`/`MaxPool`, which
    only exists when every output size divides the input size; otherwise the export fails:
    "Unsupported: ONNX export of operator adaptive_avg_pool2d, output size that are not factor
    of input size" (measured, docs/evidence.md).

    ## Fix safety
    `--unsafe-fixes` writes the pooling as explicit windows: the layer becomes an instance of
    `_AdaptivePoolWindows(size, "avg" or "max", dims)`, a helper module inserted once per file
    (the functional call, that module applied to its input), which pools each of PyTorch's
    windows (`[floor(j·n/o), ceil((j+1)·n/o))`, one axis at a time) with `narrow`, `mean`/`amax`
    and `cat`: Slice, ReduceMean/ReduceMax and Concat, which export at every opset and run in
    ONNX Runtime and Caffe2 (checked on the fixed model). Unsafe: PyTorch computes the windows of
    any input, but the export holds those of the traced size only. The mean sums in another
    order, so outputs agree to float rounding (checked on the built model; without one it is
    held back). By hand: pool to a size that divides the input, or resize the input.
    """

    code = "MC602"
    covers = ({"divides": False},)
    predicts = (("export", "failed", Severity.WARNING),)
    name = "adaptive-pool-not-dividing"
    summary = "adaptive pooling to a size that does not divide the input size cannot be exported"
    bad_example = (
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.pool = nn.AdaptiveAvgPool2d(5)\n"
    )
    good_example = (
        "import torch.nn as nn\n"
        "class Head(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.pool = nn.AdaptiveAvgPool2d(1)\n"
    )
    static = False

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if target.onnx and target.exporter == "torchscript" else None

    def match(self, facts: AdaptivePoolFacts) -> Match | None:
        outputs, inputs = facts.outputs, facts.input_size
        if outputs is UNKNOWN or inputs is UNKNOWN or len(inputs) != len(outputs):
            return None
        if not any(o and i % o for i, o in zip(inputs, outputs, strict=True)):
            return None
        sizes = "×".join("*" if o is None else str(o) for o in outputs)
        return Match(f"{facts.what} on a {'×'.join(map(str, inputs))} input: the output size {sizes} does not divide "
                     "the input, and the TorchScript exporter fails (\"output size that are not factor of input "
                     "size\")", fixable=True)


RULES: tuple[Rule, ...] = (GlobalAveragePoolInCaffe2(), AdaptivePoolNotDividing())


def facts_from_call(source: SourceFile, call: cst.Call,
                    assigned: Mapping[str, Sequence[cst.BaseExpression]]) -> AdaptivePoolFacts | None:
    """AdaptivePoolFacts for an adaptive pooling call or constructor, or None."""
    hit = source.api_call(call, tuple(APIS), assigned)
    if hit is None:
        return None
    api, _, args, _ = hit
    bound, _ = bind_arguments(args, APIS[api])
    return AdaptivePoolFacts(api=api, output_size=source.value(bound.get("output_size")))


def extract(source: SourceFile) -> Iterator[tuple[cst.Call, AdaptivePoolFacts]]:
    """Every adaptive pooling call or constructor in the file with its facts."""
    return calls_with_facts(source, facts_from_call)


def describe(facts: AdaptivePoolFacts) -> str:
    inputs = "" if facts.input_size is UNKNOWN else f" on {'×'.join(map(str, facts.input_size))}"
    return f"{facts.what}{inputs}"


def call_facts(api: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], tracing: bool) -> AdaptivePoolFacts:
    """Facts of one traced call, with the input's spatial size (the layers' calls are traced too)."""
    bound = bind_call(("input", "output_size"), args, kwargs)
    dims = int(api[-2])
    shape = getattr(bound.get("input"), "shape", None)
    inputs = tuple(int(d) for d in shape[-dims:]) if shape is not None and len(shape) >= dims else UNKNOWN
    return AdaptivePoolFacts(api=api, output_size=plain(bound.get("output_size")), input_size=inputs)


FAMILY = Family(
    name="adaptive_pooling", rules=RULES, facts_type=AdaptivePoolFacts, trigger=TRIGGER, extract=extract,
    describe=describe,
    # the layers' facts come from their traced calls, which know the input size
    layer_apis=frozenset(api for api in APIS if not api.startswith("torch.nn.functional.")), layer_calls=True,
    call_apis=frozenset(api for api in APIS if api.startswith("torch.nn.functional.")), call_facts=call_facts,
    failing_ops=re.compile(r"GlobalAveragePool|adaptive", re.IGNORECASE),
)
