"""MC602: adaptive pooling to a size that does not divide its input, written as explicit windows.

Why: the TorchScript exporter writes ``nn.AdaptiveAvgPool2d(5)`` as one fixed ``AveragePool``,
which exists only when 5 divides the input size; on a 33×33 map the export fails ("output size
that are not factor of input size"). PyTorch's adaptive windows are not uniform there (output
``j`` pools ``[floor(j·n/o), ceil((j+1)·n/o))``: 7, 8, 7, 8, 7 rows), so no single pooling
layer computes them. The fix computes exactly those windows, one axis at a time (a window's mean
is the mean of its rows' means, its max the max of their maxima): ``narrow`` + ``mean``/``amax``
+ ``cat``, which export as Slice, ReduceMean/ReduceMax and Concat.

- ``nn.AdaptiveAvgPool2d(5)`` / ``nn.AdaptiveMaxPool2d(5)`` (a layer) → an instance of a helper
  module inserted once per file, ``_AdaptivePoolWindows(5, "avg", 2)``; no parameters or buffers,
  so checkpoints load unchanged;
- ``F.adaptive_avg_pool2d(x, 5)`` → ``_AdaptivePoolWindows(5, "avg", 2)(x)``.

*Unsafe*: in PyTorch the helper computes the windows of whatever input it gets, but the export
bakes the windows of the size it was traced at (the window bounds are Python ints of the traced
shape), so the exported model is right for that input size only, as the fix record says. The
mean sums in another order (``NUMERIC``): checked on the built model.
"""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst
from modelcheck.findings import Finding
from modelcheck.fixers.adaptive_pooling import bind_call, operand
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
from modelcheck.static.source import SourceFile

CODES = ("MC602",)
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 3
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = True
HELPER_KEY = "adaptive-pool-windows"

HELPER = '''
class {name}(torch.nn.Module):
    """Adaptive pooling computed window by window, so that it exports for any output size.

    Inserted by `modelcheck --fix` (MC602): the TorchScript exporter cannot export adaptive
    pooling to a size that does not divide the input. Output j of an axis of length n pools
    [floor(j*n/o), ceil((j+1)*n/o)), as PyTorch's does. The export is right for the input size it
    was traced at (the window bounds are that size's). No parameters or buffers.
    """

    def __init__(self, output_size, kind="avg", dims=2):
        super().__init__()
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * dims
        self.sizes, self.kind = sizes, kind

    def forward(self, x):
        for axis, size in zip(range(x.dim() - len(self.sizes), x.dim()), self.sizes):
            length = int(x.shape[axis])
            if size is None or size == length:
                continue
            parts = []
            for j in range(size):
                start, end = j * length // size, -(-(j + 1) * length // size)
                window = x.narrow(axis, start, end - start)
                parts.append(window.mean(axis, keepdim=True) if self.kind == "avg" else window.amax(axis, keepdim=True))
            x = torch.cat(parts, axis)
        return x
'''


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """Edits or Declines for the MC602 findings in ``source``."""
    lines = {finding.location.line for finding in findings if finding.code in CODES}
    return [_plan_one(source, call, facts, source.location(call).line, names)
            for call, facts in adaptive_pooling.extract(source) if source.location(call).line in lines]


def _plan_one(source: SourceFile, call: cst.Call, facts: adaptive_pooling.AdaptivePoolFacts, line: int,
              names: Names) -> Decision:
    bound_call = bind_call(source, call, "MC602", line)
    if isinstance(bound_call, Decline):
        return bound_call
    api, bound, opaque = bound_call
    if opaque or "output_size" not in bound:
        return Decline("MC602", line, "the output size is not an argument modelcheck can see")
    if not module_name_usable(source, "torch"):
        return Decline("MC602", line, "the helper needs the name torch, which means something else in this file")
    name = names.fresh("_AdaptivePoolWindows", key=HELPER_KEY)
    layer = f"{name}({code_of(bound['output_size']).strip()}, {facts.kind!r}, {facts.dims})"
    if api.startswith("torch.nn.functional."):
        if "input" not in bound:
            return Decline("MC602", line, "the pooled tensor is not passed as an argument modelcheck can see")
        text = f"{layer}({operand(bound['input'])})"
    else:
        text = layer

    summary = f"{code_of(call).strip()} -> {text}: PyTorch's windows as Slice + Reduce + Concat"
    return Edit("MC602", line, summary, Applicability.UNSAFE, Exactness.NUMERIC,
                reason="the export holds the windows of the traced input size only",
                rewrites=((id(call), replace_with(cst.parse_expression(text))),),
                helpers=(Helper(HELPER_KEY, name, HELPER.format(name=name)),),
                imports=("torch",), anchors=(call,))
