"""MC101: a lambda stored on a module becomes a module-level function ``torch.save`` can pickle.

Why: pickle saves a function by its qualified name; a lambda's is ``<lambda>``, which it cannot
look up, so ``torch.save(model)`` fails on any lambda stored on the module tree (the seed's
Lua-converted ResNeXt-101 stores ``Lambda(lambda x: x)`` and ``LambdaReduce(lambda x, y: x + y)``).
A function defined at module level with the same parameters and body computes exactly what
the lambda did, so the fix is bit-identical and leaves the module tree and ``state_dict``
untouched.

What the fix writes:

- ``lambda x: x`` → ``_identity``; ``lambda x, y: x + y`` → ``operator.add`` (the standard
  function, exactly ``x + y``); ``lambda x: x.view(x.size(0), -1)`` → ``_flatten``;
  ``lambda x: x.view(1, -1) if 1 == len(x.size()) else x`` → ``_row_if_1d``; other bodies get
  a name from what they call (``_relu``) or their line (``_lambda_12``). Names never
  collide with a name the file uses; identical lambdas share one function.
- A lambda that reads local variables of its function (``lambda x: x * scale``) becomes
  ``functools.partial(_lambda_7, scale=scale)`` when that is exact: every variable it reads is
  a parameter or a single plain assignment before it, never rebound afterwards (a closure reads
  the variable when called, ``partial`` when created; both see the same value only then).
  Otherwise the lambda is left alone and the report says why.

Before::

    resnext = nn.Sequential(
        LambdaMap(lambda x: x, nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)),
        LambdaReduce(lambda x, y: x + y),
    )

After::

    import operator


    def _identity(x):
        # A module-level function instead of `lambda x: x`: torch.save(model) can pickle it.
        return x


    resnext = nn.Sequential(
        LambdaMap(_identity, nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)),
        LambdaReduce(operator.add),
    )
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

import libcst as cst
from libcst.metadata import (
    BuiltinAssignment,
    ComprehensionScope,
    FunctionScope,
    GlobalScope,
    MetadataWrapper,
    ScopeProvider,
)
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
from modelcheck.rules import pickling
from modelcheck.static.source import SourceFile, dotted_name, names_read

CODES = ("MC101",)
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 1
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = False

#: ``lambda a, b: a OP b`` → the ``operator`` function that is exactly ``a OP b``
_OPERATORS: dict[type, str] = {
    cst.Add: "add", cst.Subtract: "sub", cst.Multiply: "mul", cst.Divide: "truediv",
    cst.FloorDivide: "floordiv", cst.Modulo: "mod", cst.Power: "pow", cst.MatrixMultiply: "matmul",
    cst.BitAnd: "and_", cst.BitOr: "or_", cst.BitXor: "xor", cst.LeftShift: "lshift",
    cst.RightShift: "rshift",
}


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """An Edit or a Decline for every MC101 finding in ``source``."""
    wanted = {f.location.line for f in findings if f.code in CODES}  # static or dynamic sightings
    if not wanted:
        return []
    wrapper = MetadataWrapper(source.module, unsafe_skip_copy=True)
    scopes = wrapper.resolve(ScopeProvider)
    decisions: list[Decision] = []
    for node, facts in pickling.extract(source):
        if not isinstance(node, cst.Lambda) or facts.kind != "lambda":
            continue
        loc = source.location(node)
        if loc.line not in wanted:
            continue
        decisions.append(_plan_one(source, node, loc.line, scopes, names))
    return decisions


def _plan_one(source: SourceFile, node: cst.Lambda, line: int, scopes, names: Names) -> Decision:
    why = pickling.lift_blocker(node)
    if why:
        return Decline("MC101", line, why)
    captured = _captured(node, scopes)
    if isinstance(captured, str):
        return Decline("MC101", line, captured)
    text = " ".join(code_of(node).split())
    if not captured:
        operator_name = _operator_equivalent(node)
        if operator_name and module_name_usable(source, "operator"):
            replacement = cst.Attribute(cst.Name("operator"), cst.Name(operator_name))
            return Edit(
                "MC101", line, f"{text} -> operator.{operator_name}", Applicability.SAFE, Exactness.BY_CONSTRUCTION,
                rewrites=((id(node), replace_with(replacement)),), imports=("operator",), anchors=(node,),
            )
    base = _name_for(node, line)
    key = _structure_key(node) + repr(sorted(captured))
    name = names.fresh(base, key=key)
    lifted = {"body": node.body}  # the body as the other fixes leave it (see _lift)
    helper = Helper(key, name, lambda: _function_code(node, lifted["body"], name, text, captured))
    if not captured:
        return Edit(
            "MC101", line, f"{text} -> {name}", Applicability.SAFE, Exactness.BY_CONSTRUCTION,
            rewrites=((id(node), _lift(lifted, cst.Name(name))),), helpers=(helper,), anchors=(node,),
        )
    if not module_name_usable(source, "functools"):
        return Decline("MC101", line, "reads local variables, and the name functools means something else here")
    args = ", ".join(f"{var}={var}" for var in captured)
    replacement = cst.parse_expression(f"functools.partial({name}, {args})")
    return Edit(
        "MC101", line, f"{text} -> functools.partial({name}, {args})", Applicability.SAFE, Exactness.BY_CONSTRUCTION,
        reason=f"the local variable(s) {', '.join(captured)} are passed in when the module is built; "
               "they are never rebound afterwards, so the lambda saw the same values",
        rewrites=((id(node), _lift(lifted, replacement)),), helpers=(helper,), imports=("functools",),
        anchors=(node,),
    )


def _lift(lifted: dict[str, cst.BaseExpression], replacement: cst.BaseExpression):
    """Replace the lambda, keeping its rewritten body for the module-level function."""
    put = replace_with(replacement)

    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        if isinstance(updated, cst.Lambda):
            lifted["body"] = updated.body
        return put(updated)

    return rewrite


def _captured(node: cst.Lambda, scopes) -> list[str] | str:
    """Local variables the lambda reads (sorted), or why lifting them would not be exact."""
    lambda_scope = scopes.get(node.body)
    if lambda_scope is None:
        return "its scope could not be resolved"
    params = {p.name.value for p in _all_params(node)}
    captured: dict[str, FunctionScope] = {}
    for name in sorted(names_read(node.body) - params):
        assignments = list(lambda_scope[name])
        if not assignments or all(isinstance(a, BuiltinAssignment) or isinstance(a.scope, GlobalScope)
                                  for a in assignments):
            continue  # a global or builtin: a module-level function reads the same one
        scopes_of = {a.scope for a in assignments if not isinstance(a, BuiltinAssignment)}
        if any(isinstance(s, ComprehensionScope) for s in scopes_of):
            return (f"it reads the comprehension variable {name!r}; a closure sees its last value "
                    "when called, functools.partial would bind each value")
        if len(scopes_of) != 1 or not isinstance(next(iter(scopes_of)), FunctionScope):
            return f"it reads {name!r} from an enclosing scope that cannot be resolved exactly"
        if len(assignments) != 1:
            return (f"it reads the local variable {name!r}, which is assigned more than once; a closure "
                    "sees the value at call time, functools.partial the value at creation")
        captured[name] = next(iter(scopes_of))
        why = _single_assignment_before(node, name, assignments[0], scopes)
        if why:
            return why
    return sorted(captured)


def _single_assignment_before(node: cst.Lambda, name: str, assignment, scopes) -> str:
    """'' when the one assignment of ``name`` surely runs once, before the lambda is made."""
    function = getattr(assignment.scope, "node", None)
    if function is not None and _rebinds(function, name):
        return (f"the local variable {name!r} is deleted or rebound through nonlocal; a closure "
                "sees the value at call time, functools.partial the value at creation")
    if isinstance(assignment.node, cst.Param):
        return ""
    return _plain_assignment_in_body(node, name, assignment)


def _rebinds(function: cst.CSTNode, name: str) -> bool:
    """``del name`` or ``nonlocal name`` anywhere inside ``function``."""
    found = False

    class _Find(cst.CSTVisitor):
        def visit_Del(self, node: cst.Del) -> None:
            nonlocal found
            found = found or name in names_read(node.target)

        def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
            nonlocal found
            found = found or any(item.name.value == name for item in node.names)

    function.visit(_Find())
    return found


def _plain_assignment_in_body(node: cst.Lambda, name: str, assignment) -> str:
    """The assignment must be a top-level ``name = ...`` statement of the function, before the lambda."""
    scope = assignment.scope
    function = getattr(scope, "node", None)
    if not isinstance(function, cst.FunctionDef) or not isinstance(function.body, cst.IndentedBlock):
        return f"it reads {name!r} from a scope modelcheck cannot follow"
    assigned_at = lambda_at = None
    for index, stmt in enumerate(function.body.body):
        if assigned_at is None and isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if (isinstance(small, cst.Assign) and len(small.targets) == 1
                        and isinstance(small.targets[0].target, cst.Name)
                        and small.targets[0].target is assignment.node):
                    assigned_at = index
        if lambda_at is None and _holds(stmt, node):
            lambda_at = index
    if assigned_at is None:
        return (f"the local variable {name!r} is not set by a plain assignment at the top of its "
                "function, so its value when the lambda runs is not provably its value now")
    if lambda_at is None or assigned_at >= lambda_at:
        return f"the local variable {name!r} is assigned after the lambda is created"
    return ""


def _holds(stmt: cst.CSTNode, target: cst.CSTNode) -> bool:
    found = False

    class _Find(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            found = found or node is target
            return not found

    stmt.visit(_Find())
    return found


def _all_params(node: cst.Lambda) -> list[cst.Param]:
    params = node.params
    out = [*params.posonly_params, *params.params, *params.kwonly_params]
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            out.append(star)
    return out


def _simple_params(node: cst.Lambda) -> list[str] | None:
    """Parameter names when the lambda takes only plain positional parameters."""
    params = node.params
    if params.posonly_params or params.kwonly_params or params.star_kwarg or isinstance(params.star_arg, cst.Param):
        return None
    if any(p.default is not None for p in params.params):
        return None
    return [p.name.value for p in params.params]


def _operator_equivalent(node: cst.Lambda) -> str | None:
    """``lambda a, b: a + b`` → "add": the operator function that computes exactly the body."""
    names = _simple_params(node)
    body = node.body
    if names is None or len(names) != 2 or not isinstance(body, cst.BinaryOperation) or body.lpar:
        return None
    left, right = body.left, body.right
    if not (isinstance(left, cst.Name) and isinstance(right, cst.Name)):
        return None
    if [left.value, right.value] != names:
        return None
    return _OPERATORS.get(type(body.operator))


def _name_for(node: cst.Lambda, line: int) -> str:
    """A descriptive helper name from what the lambda does."""
    names = _simple_params(node)
    body = node.body
    if names and len(names) == 1:
        (x,) = names
        if isinstance(body, cst.Name) and body.value == x:
            return "_identity"
        if _is_flatten(body, x):
            return "_flatten"
        if _is_row_if_1d(body, x):
            return "_row_if_1d"
    if names and len(names) == 2 and (op := _operator_name(body, names)):
        return f"_{op}"
    if isinstance(body, cst.Call):
        callee = dotted_name(body.func)
        if callee:
            short = callee.rsplit(".", 1)[-1].strip("_")
            if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,30}", short):
                return f"_{short.lower()}"
    return f"_lambda_{line}"


def _operator_name(body: cst.BaseExpression, names: list[str]) -> str | None:
    if not isinstance(body, cst.BinaryOperation):
        return None
    if not (isinstance(body.left, cst.Name) and isinstance(body.right, cst.Name)):
        return None
    if [body.left.value, body.right.value] != names:
        return None
    return _OPERATORS.get(type(body.operator), "").rstrip("_") or None


def _is_flatten(body: cst.BaseExpression, x: str) -> bool:
    """``x.view(x.size(0), -1)``, ``x.reshape(x.shape[0], -1)`` and the like."""
    if not (isinstance(body, cst.Call) and isinstance(body.func, cst.Attribute)):
        return False
    if not (isinstance(body.func.value, cst.Name) and body.func.value.value == x):
        return False
    if body.func.attr.value not in ("view", "reshape") or len(body.args) != 2:
        return False
    first, second = (code_of(arg.value).replace(" ", "") for arg in body.args)
    return second == "-1" and first in (f"{x}.size(0)", f"{x}.shape[0]", f"{x}.size()[0]")


def _is_row_if_1d(body: cst.BaseExpression, x: str) -> bool:
    """``x.view(1, -1) if 1 == len(x.size()) else x``: what Lua-converted models put before each Linear."""
    if not (isinstance(body, cst.IfExp) and isinstance(body.orelse, cst.Name) and body.orelse.value == x):
        return False
    row = code_of(body.body).replace(" ", "")
    test = code_of(body.test).replace(" ", "")
    one_d = {f"len({x}.size())", f"len({x}.shape)", f"{x}.dim()"}
    return row in (f"{x}.view(1,-1)", f"{x}.reshape(1,-1)") and any(
        test in (f"1=={d}", f"{d}==1") for d in one_d)


def _structure_key(node: cst.Lambda) -> str:
    """Identical lambdas (up to formatting) get the same key and share one function."""
    try:
        return ast.dump(ast.parse(code_of(node).strip(), mode="eval"))
    except SyntaxError:
        return code_of(node)


def _function_code(node: cst.Lambda, body_node: cst.BaseExpression, name: str, text: str,
                   captured: list[str]) -> str:
    params = code_of(node.params).strip()
    if captured:
        has_star = bool(node.params.kwonly_params) or isinstance(node.params.star_arg, (cst.Param, cst.ParamStar))
        extra = ", ".join(captured)
        params = f"{params}, {extra}" if has_star else (f"{params}, *, {extra}" if params else f"*, {extra}")
    body = code_of(body_node).strip()
    if "\n" in body:
        body = f"(\n    {body}\n)"
    comment = text.replace("\n", " ")
    note = f"# Replaces `{comment}`:\n    # torch.save(model) can pickle a module-level function, not a lambda."
    if captured:
        note += "\n    # The local variable(s) it read come in through functools.partial."
    return f"def {name}({params}):\n    {note}\n    return {body}\n"
