"""MC601: global average pooling written as a mean, which Caffe2 runs.

Why: ``F.adaptive_avg_pool2d(x, 1)`` and ``nn.AdaptiveAvgPool2d(1)`` export as
``GlobalAveragePool``, which the Caffe2 backend fails to run; a mean over the spatial dims with
``keepdim=True`` is the same computation and exports as ``ReduceMean``, which it runs (measured in
docs/evidence.md). The fix:

- ``F.adaptive_avg_pool2d(x, 1)`` → ``x.mean((-2, -1), keepdim=True)`` (``(-1,)`` for 1-d,
  ``(-3, -2, -1)`` for 3-d);
- ``nn.AdaptiveAvgPool2d(1)`` (a layer: it may be stored, put in a Sequential, called later) → an
  instance of a small helper module inserted once per file, ``_GlobalAvgPool``, whose forward is
  that mean. It has no parameters or buffers, so checkpoints load unchanged.

*Safe*: the same value for every input size; the sum runs in another order, so the outputs agree
to float rounding (``NUMERIC``) and are checked so on the built model.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst
from modelcheck.findings import Finding
from modelcheck.fixers.base import (
    Applicability,
    Decision,
    Decline,
    Edit,
    Exactness,
    FixContext,
    Helper,
    Names,
    code_of,
    module_name_usable,
    replace_with,
)
from modelcheck.rules import adaptive_pooling
from modelcheck.static.source import SourceFile, bind_arguments

CODES = ("MC601",)
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 3
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = True
HELPER_KEY = "global-avg-pool"

HELPER = '''
class {name}(torch.nn.Module):
    """Global average pooling that Caffe2 runs: the mean over the last ``dims`` dims, kept as size 1.

    Inserted by `modelcheck --fix` (MC601): nn.AdaptiveAvgPool2d(1) exports as GlobalAveragePool,
    which Caffe2 fails to run; this exports as ReduceMean. No parameters or buffers, so
    checkpoints load unchanged.
    """

    def __init__(self, dims=2):
        super().__init__()
        self.dims = tuple(range(-dims, 0))

    def forward(self, x):
        return x.mean(self.dims, keepdim=True)
'''


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """Edits or Declines for the MC601 findings in ``source``."""
    lines = {finding.location.line for finding in findings if finding.code in CODES}
    decisions: list[Decision] = []
    for call, facts in adaptive_pooling.extract(source):
        line = source.location(call).line
        if line in lines and facts.kind == "avg":
            decisions.append(_plan_one(source, call, facts, line, names))
    return decisions


def _dims(api: str) -> str:
    dims = int(api[-2])
    return "(-1,)" if dims == 1 else "(" + ", ".join(str(-d) for d in range(dims, 0, -1)) + ")"


def _plan_one(source: SourceFile, call: cst.Call, facts: adaptive_pooling.AdaptivePoolFacts, line: int,
              names: Names) -> Decision:
    bound_call = bind_call(source, call, "MC601", line)
    if isinstance(bound_call, Decline):
        return bound_call
    api, bound, opaque = bound_call
    if opaque:
        return Decline("MC601", line, "the call passes *args or **kwargs, so its arguments are not known")
    if api.startswith("torch.nn.functional."):
        if "input" not in bound:
            return Decline("MC601", line, "the pooled tensor is not passed as an argument modelcheck can see")
        text = f"{operand(bound['input'])}.mean({_dims(api)}, keepdim=True)"
        helpers: tuple[Helper, ...] = ()
        imports: tuple[str, ...] = ()
    else:
        if not module_name_usable(source, "torch"):
            return Decline("MC601", line, "the helper needs the name torch, which means something else in this file")
        name = names.fresh("_GlobalAvgPool", key=HELPER_KEY)
        helpers, imports = (Helper(HELPER_KEY, name, HELPER.format(name=name)),), ("torch",)
        text = f"{name}({int(api[-2])})"

    summary = f"{code_of(call).strip()} -> {text}: ReduceMean, which Caffe2 runs"
    return Edit("MC601", line, summary, Applicability.SAFE, Exactness.NUMERIC,
                reason="the same mean for every input size, summed in another order",
                rewrites=((id(call), replace_with(cst.parse_expression(text))),),
                helpers=helpers, imports=imports, anchors=(call,))


def bind_call(source: SourceFile, call: cst.Call, code: str, line: int
              ) -> tuple[str, dict[str, cst.BaseExpression], bool] | Decline:
    """The adaptive pooling API ``call`` resolves to, its arguments by name and whether ``*args`` or
    ``**kwargs`` hide some; a Decline when it is called through another name."""
    api = source.resolves_to(call.func, tuple(adaptive_pooling.APIS))
    if api is None:
        return Decline(code, line, "called through an alias or functools.partial; rewrite it by hand")
    bound, opaque = bind_arguments(call, adaptive_pooling.APIS[api])
    return api, bound, opaque


def operand(expr: cst.BaseExpression) -> str:
    """``expr``'s code, parenthesised unless ``.mean`` can follow it as it is."""
    text = code_of(expr).strip()
    simple = (cst.Name, cst.Attribute, cst.Call, cst.Subscript)
    return text if isinstance(expr, simple) and not getattr(expr, "lpar", ()) else f"({text})"
