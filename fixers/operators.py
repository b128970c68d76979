"""MC502: a square written as a power, which Caffe2 cannot run, written as a product.

Why: ``x ** 2``, ``x.pow(2)`` and ``torch.pow(x, 2)`` export as ``Pow`` with a scalar exponent,
which Caffe2 1.7.1 fails to run ("[enforce fail at pow_op.h:97] A.sizes() == B.sizes() ...
Dimension mismatch", measured in the operator table at opsets 9 and 11); ``torch.square(x)``
exports as ``Mul``, which it runs (measured too: the rule offers the fix only where the table
says both). The fix:

- an operand that is a name or an attribute (``x``, ``self.scale``) → ``x * x``, which is right
  for any number type too, so a static "may" finding (``x`` might not be a tensor) is fixed alike;
- any other operand → ``torch.square(...)``, only where the operand is known to be a tensor
  (``torch.pow``, or tracing saw the call), and evaluated once as before.

*Safe*, ``BITWISE``: PyTorch computes ``pow(x, 2)`` as ``x * x`` and ``torch.square`` is
``pow(x, 2)``, so a model built from the file must give the same bits (checked on it).
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
    Names,
    code_of,
    module_name_usable,
    replace_with,
)
from modelcheck.rules import operators
from modelcheck.static.source import SourceFile, bind_arguments, dotted_name, walk

CODES = ("MC502",)
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 5
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = True

#: where ``a * a`` can stand for ``a ** 2`` without parentheses: a statement's or an argument's
#: whole value, or a term of a sum (``*`` binds tighter than ``+``, and ``b * a ** 2`` is not
#: ``b * a * a`` bit for bit)
_WHOLE = (cst.Assign, cst.AnnAssign, cst.AugAssign, cst.Return, cst.Arg, cst.Element, cst.Expr,
          cst.DictElement, cst.ComparisonTarget, cst.Comparison)
_SUMS = (cst.Add, cst.Subtract)


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """An Edit or a Decline for every fixable MC502 square in ``source``."""
    flagged = {f.location.line: f for f in findings if f.code in CODES and f.fixable}
    squares = [(node, facts) for node, facts in operators.extract(source)
               if facts.api in operators.POW_APIS and facts.known.get("power") == operators.SQUARE_FIX[0]
               and source.location(node).line in flagged]
    parents = _parents(source, {id(node) for node, _ in squares})
    decisions: list[Decision] = []
    for node, facts in squares:
        line = source.location(node).line
        tensor = facts.certain_api or flagged[line].certain
        decisions.append(_plan_one(source, node, facts.api, line, tensor, parents.get(id(node))))
    return decisions


def _operand(source: SourceFile, node: cst.CSTNode, api: str) -> cst.BaseExpression | None:
    """What is squared: ``x`` of ``x ** 2``, ``x.pow(2)`` and ``torch.pow(x, 2)`` (also through an
    alias); None for ``functools.partial(torch.pow, ...)`` or ``*args``, which name no operand."""
    if isinstance(node, cst.BinaryOperation):
        return node.left
    if not isinstance(node, cst.Call):
        return None
    if api == "torch.Tensor.pow":
        return node.func.value if isinstance(node.func, cst.Attribute) else None
    hit = source.api_call(node, ("torch.pow",), {})
    if hit is None or hit[3]:
        return None
    bound, opaque = bind_arguments(hit[2], ("input", "exponent"))
    return None if opaque else bound.get("input")


def _plan_one(source: SourceFile, node: cst.CSTNode, api: str, line: int, tensor: bool,
              parent: cst.CSTNode | None) -> Decision:
    operand = _operand(source, node, api)
    if operand is None:
        return Decline("MC502", line, "the squared tensor is not an argument modelcheck can see (a partial, "
                                      "*args); write x * x by hand")
    text = code_of(operand.with_changes(lpar=(), rpar=()) if getattr(operand, "lpar", ()) else operand).strip()
    if dotted_name(operand) is not None:
        new_text, imports = f"{text} * {text}", ()
        if not _stands_alone(node, parent):
            new_text = f"({new_text})"
    elif not tensor:
        return Decline("MC502", line, "the operand is an expression that may not be a tensor; write "
                                      "torch.square(...) by hand if it is one")
    elif not module_name_usable(source, "torch"):
        return Decline("MC502", line, "the fix needs the name torch, which means something else in this file")
    else:
        new_text, imports = f"torch.square({text})", ("torch",)
    summary = f"{code_of(node).strip()} -> {new_text}: Mul, which Caffe2 runs"
    return Edit("MC502", line, summary, Applicability.SAFE, Exactness.BITWISE,
                reason="PyTorch computes pow(x, 2) as x * x: the same bits for every input",
                rewrites=((id(node), replace_with(cst.parse_expression(new_text))),), imports=imports,
                anchors=(node,))


def _stands_alone(node: cst.CSTNode, parent: cst.CSTNode | None) -> bool:
    """Can a product replace ``node`` without parentheses?"""
    if getattr(node, "lpar", ()):
        return True  # replace_with keeps the node's own parentheses
    if isinstance(parent, _WHOLE):
        return True
    return isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator, _SUMS)


def _parents(source: SourceFile, wanted: set[int]) -> dict[int, cst.CSTNode]:
    """The parent node of each wanted node, by the wanted node's id."""
    found: dict[int, cst.CSTNode] = {}
    stack: list[cst.CSTNode] = []

    class _Visitor:
        def on_visit(self, node: cst.CSTNode) -> bool:
            if id(node) in wanted and stack:
                found[id(node)] = stack[-1]
            stack.append(node)
            return True

        def on_leave(self, original_node: cst.CSTNode) -> None:
            stack.pop()

    if wanted:
        walk(source.module, _Visitor())
    return found
