"""MC301: ``ceil_mode=True`` pooling becomes ``ceil_mode=False`` with explicit padding.

Why: Caffe2 ignores ``ceil_mode`` from opset 10 (a smaller map, no error) and at opset 9 the
exporter emulates it with padding computed for the traced input size only. ``ceil_mode=True``
rounds the output size up: PyTorch adds one last window that hangs over the right/bottom edge
and takes the maximum of what it covers. Padding the right/bottom with ``-inf`` first and
pooling with ``ceil_mode=False`` covers exactly those windows, and ``max(values, -inf)`` is
``max(values)``: the result is bit-identical.

How much padding, per spatial dimension of size ``L`` (kernel ``k``, stride ``s``, padding
``p``, dilation ``d``): ``e = s - 1`` gives the rounded-up count ``ceil((L + 2p - d(k-1) - 1)/s) + 1``
for every ``L``. PyTorch drops that last window when it would start beyond ``L + p``; that can
never happen when ``s <= d(k-1) + 1 - p`` (the common ``MaxPool2d(2, 2)``, ``MaxPool2d(3, 2, 1)``),
so the fix is *safe* there. Otherwise the right ``e`` depends on ``L``, and the fix uses the
sizes seen when the model ran on the configured input: *unsafe* (exact for those sizes only).

Where ``s == 1`` or ``d(k-1) <= p`` the flag changes no output size at all and only flips. Average
pooling divides by the number of positions a window covers inside the (implicitly) padded
input; explicit padding would be counted, so an average pool is fixed only where the shape
arithmetic shows the flag has no effect (stride 1, or the configured sizes divide evenly:
unsafe). ``return_indices=True`` is declined (indices would refer to the padded tensor).

Before::

    self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
    y = F.max_pool2d(x, 3, 2, 1, ceil_mode=True)

After::

    self.pool = nn.Sequential(nn.ConstantPad2d((0, 1, 0, 1), float("-inf")), nn.MaxPool2d(2, 2, ceil_mode=False))
    y = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2, 1, ceil_mode=False)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import libcst as cst
from modelcheck.findings import Finding
from modelcheck.fixers.base import (
    Applicability,
    Decision,
    Decline,
    Edit,
    Exactness,
    FixContext,
    Names,
    code_of,
    module_name_usable,
)
from modelcheck.rules import pooling
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments

CODES = ("MC301",)
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 2
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = True
_DIMS = re.compile(r"(?:[Pp]ool|_pool)([123])d")


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """An Edit or a Decline for every MC301 finding in ``source``."""
    lines = {f.location.line for f in findings if f.code in CODES}
    decisions: list[Decision] = []
    for call, facts in pooling.extract(source):
        line = source.location(call).line
        if line in lines and facts.ceil_mode is True:
            decisions.append(_plan_one(source, call, line, context))
    return decisions


def output_size(length: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """PyTorch's pooled length (``pooling_output_shape`` in ATen), ceil_mode included."""
    span = length + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= length + p:
        out -= 1
    return out


def extra_padding(length: int, k: int, s: int, p: int, d: int) -> int:
    """Right padding that makes floor mode give ceil mode's length at this input length."""
    span = length + 2 * p - d * (k - 1) - 1
    return max((output_size(length, k, s, p, d, True) - 1) * s - span, 0)


def never_matters(k: int, s: int, p: int, d: int) -> bool:
    """Does ceil_mode change no output length at all? Only a window hanging over the edge by
    less than the padding-adjusted span can add one, which needs ``s > 1`` and ``d(k-1) > p``."""
    return s == 1 or d * (k - 1) <= p


def always_exact(k: int, s: int, p: int, d: int) -> bool:
    """Does padding by ``s - 1`` reproduce ceil_mode for every input length?"""
    return s <= d * (k - 1) + 1 - p


def _tuple(value: Any, dims: int) -> tuple[int, ...] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value,) * dims
    if isinstance(value, tuple) and len(value) == dims and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value):
        return value
    return None


class _NotRewritten(Exception):
    """Why a pool is left as it is (the finding's Decline)."""


@dataclass(frozen=True)
class _Pool:
    """A ceil_mode pool whose window is known: per spatial dimension, its kernel, stride, padding, dilation."""

    api: str
    dims: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    divisor_override: Any

    @property
    def windows(self) -> list[tuple[int, int, int, int]]:
        """(k, s, p, d) of each spatial dimension."""
        return list(zip(self.kernel, self.stride, self.padding, self.dilation, strict=True))

    @property
    def is_max(self) -> bool:
        return "max" in self.api.lower()


def _plan_one(source: SourceFile, call: cst.Call, line: int, context: FixContext) -> Decision:
    try:
        pool = _read_pool(source, call)
    except _NotRewritten as exc:
        return Decline("MC301", line, str(exc))
    if all(never_matters(*window) for window in pool.windows):
        return _flip(call, pool.api, line, Applicability.SAFE,
                     "ceil_mode has no effect for any input size here (stride 1, or a kernel span within the padding)",
                     "ceil_mode=True -> ceil_mode=False (no effect at any size)")
    shapes = _seen_shapes(source, line, context, pool.dims)
    if not pool.is_max:
        return _plan_average(call, pool, line, shapes)
    return _plan_max(source, call, pool, line, context, shapes)


def _read_pool(source: SourceFile, call: cst.Call) -> _Pool:
    """The pool's window from literals; raises _NotRewritten where it is not known or not rewritable."""
    api = source.resolves_to(call.func, tuple(pooling.SIGNATURES))
    if api is None:
        raise _NotRewritten("the pool is called through an alias or functools.partial; rewrite the call site by hand")
    if "with_indices" in api:
        raise _NotRewritten("returns indices, which would refer to the padded input")
    match = _DIMS.search(api)
    if match is None:
        raise _NotRewritten(f"{api} is not a pool modelcheck can rewrite")
    dims = int(match.group(1))
    bound, opaque = bind_arguments(call, pooling.SIGNATURES[api])
    if opaque:
        raise _NotRewritten("the call passes *args or **kwargs, so its settings are not known")
    values = {name: source.value(bound[name]) if name in bound else default
              for name, default in (("kernel_size", UNKNOWN), ("stride", None), ("padding", 0),
                                    ("dilation", 1), ("return_indices", False), ("divisor_override", None),
                                    ("count_include_pad", True))}
    if values["stride"] is None:
        values["stride"] = values["kernel_size"]
    kernel, stride, padding, dilation = (_tuple(values[n], dims) for n in ("kernel_size", "stride", "padding",
                                                                           "dilation"))
    if kernel is None or stride is None or padding is None or dilation is None:
        raise _NotRewritten("kernel_size, stride, padding or dilation is not a literal modelcheck can compute with")
    if values["return_indices"] is not False:
        raise _NotRewritten("may return indices, which would refer to the padded input")
    return _Pool(api, dims, kernel, stride, padding, dilation, values["divisor_override"])


def _plan_average(call: cst.Call, pool: _Pool, line: int, shapes: list[tuple[int, ...]]) -> Decision:
    """An average pool: explicit padding would be counted in the average, so only a flip where the
    flag has no effect at the sizes seen."""
    if pool.divisor_override is not None:
        return Decline("MC301", line, "average pool with divisor_override: not rewritten")
    if shapes and all(_no_effect(shape, pool.kernel, pool.stride, pool.padding, pool.dilation) for shape in shapes):
        return _flip(call, pool.api, line, Applicability.UNSAFE,
                     "ceil_mode has no effect at the input size(s) seen for the "
                     f"configured input ({_shapes_text(shapes)}), but does at others",
                     "ceil_mode=True -> ceil_mode=False (no effect at the configured input size)")
    return Decline("MC301", line, "average pooling divides by the positions a window covers inside the "
                                  "padded input; explicit padding would be counted, so no exact rewrite "
                                  "(choose an input size where ceil and floor agree, or use stride 1)")


def _plan_max(source: SourceFile, call: cst.Call, pool: _Pool, line: int, context: FixContext,
              shapes: list[tuple[int, ...]]) -> Decision:
    """A max pool: -inf padding, for every size where ``always_exact``, else for the sizes seen."""
    if context.target_name == "caffe2" and context.opset >= 11:
        return Decline("MC301", line, "from opset 11 the exporter writes Pad with computed pads, which Caffe2 "
                                      "cannot convert; export the caffe2 target at opset 9 (the default)")
    if all(always_exact(*window) for window in pool.windows):
        extra = tuple(s - 1 for s in pool.stride)
        return _pad_edit(source, call, pool.api, pool.dims, extra, line, Applicability.SAFE, "",
                         f"pad right/bottom by {extra} with -inf, then ceil_mode=False (exact for every size)")
    if not shapes:
        return Decline("MC301", line, "the padding that reproduces ceil_mode depends on the input size here, "
                                      "and no model ran to show the size (pass --model file.py:Name)")
    per_shape = {tuple(extra_padding(shape[-pool.dims + i], *window) for i, window in enumerate(pool.windows))
                 for shape in shapes}
    if len(per_shape) != 1:
        return Decline("MC301", line, f"the input sizes seen ({_shapes_text(shapes)}) need different paddings")
    (extra,) = per_shape
    if not any(extra):
        return _flip(call, pool.api, line, Applicability.UNSAFE,
                     "ceil_mode has no effect at the input size(s) seen for the configured "
                     f"input ({_shapes_text(shapes)}), but does at others",
                     "ceil_mode=True -> ceil_mode=False (no effect at the configured input size)")
    return _pad_edit(source, call, pool.api, pool.dims, extra, line, Applicability.UNSAFE,
                     f"the padding is computed for the input size(s) seen ({_shapes_text(shapes)})",
                     f"pad right/bottom by {extra} with -inf, then ceil_mode=False (exact at the configured size)")


def _no_effect(shape: tuple[int, ...], kernel, stride, padding, dilation) -> bool:
    dims = len(kernel)
    return all(output_size(shape[-dims + i], k, s, p, d, True) == output_size(shape[-dims + i], k, s, p, d, False)
               for i, (k, s, p, d) in enumerate(zip(kernel, stride, padding, dilation, strict=True)))


def _seen_shapes(source: SourceFile, line: int, context: FixContext, dims: int) -> list[tuple[int, ...]]:
    key = (os.path.realpath(source.path), line)
    return [tuple(shape) for shape in context.call_shapes.get(key, []) if len(shape) >= dims]


def _shapes_text(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join("×".join(map(str, shape)) for shape in sorted(set(shapes)))


def _set_ceil(call: cst.Call, position: int | None) -> cst.Call:
    """The same call with ``ceil_mode=False``: the keyword, or the positional argument at ``position``."""
    args = list(call.args)
    for index, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == "ceil_mode":
            position = index
    if position is not None:
        args[position] = args[position].with_changes(value=cst.Name("False"))
    return call.with_changes(args=args)


def _ceil_position(call: cst.Call, api: str) -> int | None:
    """Index in ``call.args`` of a positional ceil_mode, or None when it is a keyword."""
    params = pooling.SIGNATURES[api]
    position = 0
    for index, arg in enumerate(call.args):
        if arg.keyword is None and not arg.star:
            if position < len(params) and params[position] == "ceil_mode":
                return index
            position += 1
    return None


def _flip(call: cst.Call, api: str, line: int, applicability: Applicability, reason: str,
          summary: str) -> Edit:
    position = _ceil_position(call, api)

    def rewrite(node: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(node, cst.Call)
        return _set_ceil(node, position)

    return Edit("MC301", line, summary, applicability, _exactness(applicability), reason=reason,
                rewrites=((id(call), rewrite),), anchors=(call,))


def _exactness(applicability: Applicability) -> Exactness:
    """A safe pool rewrite is exact for every size by the shape arithmetic; an unsafe one only
    for the sizes a model run showed, so a model must confirm it bit for bit."""
    return Exactness.BY_CONSTRUCTION if applicability is Applicability.SAFE else Exactness.BITWISE


def _prefix(source: SourceFile, call: cst.Call, module: str) -> str | None:
    """How the call site can name ``module`` (torch.nn or torch.nn.functional), or None."""
    if isinstance(call.func, cst.Attribute) and source.qualname(call.func.value) == module:
        return code_of(call.func.value).strip()  # the call site already names it so
    if module_name_usable(source, "torch"):
        return module
    return None


def _pad_edit(source: SourceFile, call: cst.Call, api: str, dims: int, extra: tuple[int, ...], line: int,
              applicability: Applicability, reason: str, summary: str) -> Decision:
    pads = ", ".join(f"0, {e}" for e in reversed(extra))  # F.pad order: last dimension first
    position = _ceil_position(call, api)
    functional = not api.rsplit(".", 1)[-1][:1].isupper()
    if functional:
        prefix = _prefix(source, call, "torch.nn.functional")
        if prefix is None:
            return Decline("MC301", line, "cannot name torch.nn.functional at this call (the name torch is taken)")
        bound, _ = bind_arguments(call, pooling.SIGNATURES[api])
        if "input" not in bound:
            return Decline("MC301", line, "the pooled tensor is not passed as an argument modelcheck can see")

        def rewrite(node: cst.CSTNode) -> cst.CSTNode:
            assert isinstance(node, cst.Call)
            args = list(node.args)
            for index, arg in enumerate(args):
                if arg.keyword is None or arg.keyword.value == "input":
                    padded = cst.parse_expression(f'{prefix}.pad(__x__, ({pads}), value=float("-inf"))')
                    assert isinstance(padded, cst.Call)
                    padded = padded.with_changes(args=[padded.args[0].with_changes(value=arg.value), *padded.args[1:]])
                    args[index] = arg.with_changes(value=padded)
                    break
            return _set_ceil(node.with_changes(args=args), position)

        imports = ("torch",) if prefix == "torch.nn.functional" else ()
        return Edit("MC301", line, summary, applicability, _exactness(applicability), reason=reason,
                    rewrites=((id(call), rewrite),), imports=imports, anchors=(call,))
    prefix = _prefix(source, call, "torch.nn")
    if prefix is None:
        return Decline("MC301", line, "cannot name torch.nn at this call (the name torch is taken)")

    def rewrite_module(node: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(node, cst.Call)
        pool = _set_ceil(node, position)
        wrapper = cst.parse_expression(
            f'{prefix}.Sequential({prefix}.ConstantPad{dims}d(({pads}), float("-inf")), __pool__)')
        assert isinstance(wrapper, cst.Call)
        args = [wrapper.args[0], wrapper.args[1].with_changes(value=pool.with_changes(lpar=(), rpar=()))]
        return wrapper.with_changes(args=args, lpar=node.lpar, rpar=node.rpar)

    imports = ("torch",) if prefix == "torch.nn" else ()
    return Edit("MC301", line, summary, applicability, _exactness(applicability), reason=reason,
                rewrites=((id(call), rewrite_module),), imports=imports, anchors=(call,))
