"""MC3xx: pooling with ``ceil_mode=True``.

The seed's author had to turn ``nn.MaxPool2d(2, 2, ceil_mode=True)`` into ``ceil_mode=False``
by hand. Measured on this project's machines: at opset 10 and later the Caffe2 backend ignores
``ceil_mode`` and silently returns a smaller map (32×32 instead of 34×34); at opset 9 the
exporter emulates it with padding computed for the traced input size only. ncnn (through pnnx)
computes ``ceil_mode`` pooling its own way: MC302.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family, bind_call, is_layer, plain
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments, calls_with_facts, cst
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
    count_include_pad: Any = True  # average pools only
    #: the traced input's spatial size (a traced call knows it; source and a built layer do not)
    input_size: Any = UNKNOWN


class CeilModePooling(Rule):
    """## What it does
    Checks for max and average pooling with `ceil_mode=True` (`nn.MaxPool2d`, `nn.AvgPool2d`,
    `F.max_pool2d`, ... in 1, 2 and 3 dimensions).

    ## Why is this bad?
    PyTorch rounds the output size up when `ceil_mode=True`. ONNX `MaxPool`/`AveragePool` only
    carry `ceil_mode` from opset 10, and the Caffe2 backend ignores the attribute: at opset 11,
    `MaxPool2d(2, 2, ceil_mode=True)` on a 33×33 map gives Caffe2 a 16×16 map instead of 17×17,
    silently (measured, docs/evidence.md). At opset 9 the exporter emulates `ceil_mode` with
    extra padding computed for the traced input size, so the exported graph is only right for
    that size. ONNX Runtime honours `ceil_mode` from opset 10.

    ## Fix safety
    `--fix` sets `ceil_mode=False`; where that changes the output, it first pads the right and
    bottom with `-inf` (`nn.ConstantPad2d`, or `F.pad` for a functional call), so the last
    window covers what PyTorch's rounded-up window covered and `max` gives the same values.
    Safe, and exact by construction for every input size, when the flag has no effect (stride 1,
    or a kernel span within the padding) or when the padding is the same for every size (the
    common `MaxPool2d(2, 2)` and `MaxPool2d(3, 2, 1)`). Unsafe (`--unsafe-fixes`) when the
    padding, or whether the flag matters, depends on the input size: it is then computed from
    the sizes a model built from the file received, and that model must confirm the outputs
    bit for bit. Left alone: average pools where the flag matters (explicit padding would be
    counted in the average), `return_indices=True`, and the caffe2 target from opset 11, where
    the exported `Pad` does not convert.
    """

    code = "MC301"
    predicts = (("caffe2", "mismatch", Severity.ERROR), ("second_size", "mismatch", Severity.WARNING),
                ("second_size", "failed", Severity.WARNING))
    size_dependent = True
    name = "ceil-mode-pooling"
    summary = "pooling with ceil_mode=True: Caffe2 ignores it from opset 10 (smaller output, no error)"
    bad_example = "import torch.nn as nn\npool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)\n"
    good_example = "import torch.nn as nn\npool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=False)\n"

    def verdict(self, target: Target) -> Severity | None:
        if target.name == "caffe2":
            return Severity.ERROR if target.opset >= 10 else Severity.WARNING
        return Severity.WARNING if target.onnx and target.opset < 10 else None

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


def rounds_up_somewhere(k: int, s: int, p: int, d: int) -> bool:
    """Does ``ceil_mode`` add a window at some input length? Not with stride 1 or a kernel span within the padding."""
    return s > 1 and d * (k - 1) > p


def drops_somewhere(k: int, s: int, p: int, d: int) -> bool:
    """Does PyTorch drop ``ceil_mode``'s last window (it would start in the right padding) at some
    input length? The window rounds up by 0 to ``s - 1``; it is dropped when that reaches ``d(k-1) + 1 - p``."""
    return s > d * (k - 1) + 1 - p


def _per_dim(facts: PoolFacts) -> list[tuple[int, int, int, int]] | None:
    """(kernel, stride, padding, dilation) per spatial dimension; None when one is not a known int."""
    match = re.search(r"pool([123])d", facts.api, re.IGNORECASE)
    dims = int(match.group(1)) if match else 0

    def ints(value: Any) -> tuple[int, ...] | None:
        values = (value,) * dims if isinstance(value, int) else value
        ok = isinstance(values, (tuple, list)) and len(values) == dims and all(
            isinstance(v, int) and not isinstance(v, bool) for v in values)
        return tuple(values) if ok else None

    kernel = ints(facts.kernel_size)
    stride = kernel if facts.stride in (None, ()) else ints(facts.stride)
    found = (kernel, stride, ints(facts.padding), ints(facts.dilation))
    if not dims or any(v is None for v in found):
        return None
    return list(zip(*found, strict=True))  # type: ignore[arg-type]


class NcnnCeilModePooling(Rule):
    """## What it does
    Checks for pooling with `ceil_mode=True` that ncnn computes differently from PyTorch: average
    pools that count the padding (`count_include_pad=True`, the default) with a stride above 1,
    and any pool whose stride is large enough that PyTorch may drop the last window.

    ## Why is this bad?
    pnnx converts the pool to ncnn's `Pooling` with ceil mode, and ncnn treats the window
    `ceil_mode` adds at the bottom/right edge in two ways PyTorch does not (measured on ncnn
    1.0.20261020 + pnnx 20261020, 90 pool settings and sizes, every one as predicted here):

    - an average pool with `count_include_pad=True` divides that window's sum by the whole
      kernel, PyTorch only by the part inside the padded input: the last row and column differ
      wherever `ceil_mode` rounds up, with or without padding (`AvgPool2d(3, 2, 1)` on 16×16:
      0.21 off; `AvgPool2d(2, 2)` on 17×17: 0.91 off). `count_include_pad=False` is right.
    - PyTorch drops the added window when it would start in the right padding; ncnn keeps it
      and returns one more row and column (`MaxPool2d(2, 2, 1)` on 17×17: 10×10, PyTorch 9×9).
      Possible only when the stride exceeds kernel − padding (dilation `d`: `d(k − 1) + 1 − padding`).

    No error either way. Both depend on the input size: `AvgPool2d(3, 2, 1)` is right on 17×17.
    So the finding is certain only where tracing saw the pool's input size and `ceil_mode`
    rounds up (or drops a window) at that size; read from source it says "may", and tracing at a
    size where nothing rounds up refutes it. `divisor_override` is another matter: ncnn cannot
    load such a pool at all.

    ## Fix safety
    No automatic fix. By hand, where the stride is at most kernel − padding (PyTorch never drops
    a window: `AvgPool2d(3, 2, 1)`, `AvgPool2d(2, 2)`): with padding 0, add
    `count_include_pad=False`, which changes nothing in PyTorch (there is no padding to count);
    with padding `p`, pad with zeros first and pool without padding,
    `nn.Sequential(nn.ZeroPad2d(p), nn.AvgPool2d(k, s, ceil_mode=True, count_include_pad=False))`,
    the same numbers in PyTorch for every input size and right on ncnn (measured). Where PyTorch
    may drop the last window, no rewrite holds for every input size: choose input sizes where
    `ceil_mode` does not round up, or pool with `ceil_mode=False` and padding computed for yours.
    """

    code = "MC302"
    covers = ({"ceil_mode": True},)
    predicts = (("ncnn", "mismatch", Severity.ERROR),)
    name = "ncnn-ceil-mode-pooling"
    summary = "ceil_mode pooling that ncnn computes differently (padded average, dropped last window)"
    bad_example = "import torch.nn as nn\npool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)\n"
    good_example = ("import torch.nn as nn\npool = nn.Sequential(nn.ZeroPad2d(1), nn.AvgPool2d(kernel_size=3, "
                    "stride=2, ceil_mode=True, count_include_pad=False))\n")
    example_target = "ncnn"

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if target.name == "ncnn" else None

    def match(self, facts: PoolFacts) -> Match | None:
        if facts.ceil_mode is not True and facts.ceil_mode is not UNKNOWN:
            return None
        short = facts.api.rsplit(".", 1)[-1]
        dims = _per_dim(facts)
        sizes = _sizes(facts, dims)
        averaged = "avg" in short.lower() and facts.count_include_pad is not False
        if sizes is not None and dims is not None:  # traced: decided at the size the model ran at
            divides = averaged and any(rounds_up_at(size, *d) for size, d in zip(sizes, dims, strict=True))
            drops = any(drops_at(size, *d) for size, d in zip(sizes, dims, strict=True))
        else:  # at some input size
            divides = averaged and (dims is None or any(rounds_up_somewhere(*d) for d in dims))
            drops = dims is not None and any(drops_somewhere(*d) for d in dims)
        if not (divides or drops):
            return None
        problems = []
        if divides:
            counted = "count_include_pad=True" if facts.count_include_pad is True else "count_include_pad maybe True"
            problems.append(f"with {counted}, ncnn divides the window ceil_mode adds at the bottom/right edge "
                            "by the whole kernel, PyTorch by the part inside the padded input: the last row and "
                            "column differ where ceil_mode rounds up")
        if drops:
            problems.append("where PyTorch drops a last window that would start in the padding, ncnn keeps it: "
                            "one more row and column")
        certain = (sizes is not None and facts.ceil_mode is True and facts.certain_api and dims is not None
                   and (drops or facts.count_include_pad is True))
        what = f"{short}(ceil_mode=True)" if facts.ceil_mode is True else f"{short}(ceil_mode=?)"
        where = f"at the traced size {'×'.join(map(str, sizes))}" if sizes else "at input sizes where it rounds up"
        return Match(f"{what} computes something else on ncnn {where}, without error: {'; and '.join(problems)}",
                     certain=certain)


def _sizes(facts: PoolFacts, dims: list[tuple[int, int, int, int]] | None) -> tuple[int, ...] | None:
    """The traced input's spatial size, one per pooled dimension, when known."""
    size = facts.input_size
    if dims is None or not isinstance(size, tuple) or len(size) != len(dims):
        return None
    return size if all(isinstance(v, int) for v in size) else None


def _lengths(size: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """PyTorch's output length with ceil_mode (a last window starting in the right padding dropped) and
    the length ceil_mode's rounding alone gives: they differ when PyTorch drops that window."""
    span = size + 2 * p - d * (k - 1) - 1
    rounded = -(-span // s) + 1
    return (rounded - 1 if (rounded - 1) * s >= size + p else rounded), rounded


def rounds_up_at(size: int, k: int, s: int, p: int, d: int) -> bool:
    """Does ``ceil_mode`` add a window at this input length?"""
    span = size + 2 * p - d * (k - 1) - 1
    return span % s != 0 and _lengths(size, k, s, p, d)[0] > span // s + 1


def drops_at(size: int, k: int, s: int, p: int, d: int) -> bool:
    """Does PyTorch drop ``ceil_mode``'s last window at this input length (ncnn keeps it)?"""
    pytorch, rounded = _lengths(size, k, s, p, d)
    return pytorch != rounded


RULES: tuple[Rule, ...] = (CeilModePooling(), NcnnCeilModePooling())


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
        count_include_pad=value("count_include_pad", True) if "count_include_pad" in SIGNATURES[api] else True,
    )


def extract(source: SourceFile) -> Iterator[tuple[cst.Call, PoolFacts]]:
    """Every pooling call in the file with its facts."""
    return calls_with_facts(source, facts_from_call)


def describe(facts: PoolFacts) -> str:
    """``MaxPool2d(ceil_mode=True)``: the live values the rule decided on."""
    return f"{facts.api.rsplit('.', 1)[-1]}(ceil_mode={facts.ceil_mode!r})"


def call_facts(api: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], tracing: bool) -> PoolFacts:
    """PoolFacts of one traced pooling call, with its input's spatial size."""
    bound = bind_call(SIGNATURES[api], args, kwargs)
    kernel = plain(bound.get("kernel_size"))
    stride = plain(bound.get("stride"))
    match = re.search(r"pool([123])d", api, re.IGNORECASE)
    shape = getattr(bound.get("input"), "shape", None)
    dims = int(match.group(1)) if match else 0
    size = tuple(int(v) for v in shape[-dims:]) if shape is not None and dims and len(shape) >= dims else UNKNOWN
    return PoolFacts(
        api=api, ceil_mode=bool(bound.get("ceil_mode", False)), kernel_size=kernel,
        stride=kernel if stride in (None, ()) else stride, padding=plain(bound.get("padding", 0)),
        dilation=plain(bound.get("dilation", 1)), count_include_pad=bool(bound.get("count_include_pad", True)),
        input_size=size,
    )


FAMILY = Family(
    name="pooling", rules=RULES, facts_type=PoolFacts, trigger=TRIGGER, extract=extract, describe=describe,
    # a layer's facts come from its traced calls, which know the input size (MC302 depends on it)
    layer_apis=frozenset(api for api in SIGNATURES if is_layer(api)), layer_calls=True,
    call_apis=frozenset(api for api in SIGNATURES if not is_layer(api)), call_facts=call_facts,
    failing_ops=re.compile(r"(?<!global)(?<!adaptive_)(?:max|avg|average|lp)_?pool", re.IGNORECASE),
)
