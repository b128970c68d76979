"""The extractors of the families the report path runs on an ``ast`` tree (``static.fast``).

Each is its family's libcst ``extract`` (``rules/<family>.py``) read over :class:`~.fast.AstSource`:
the same facts, for the node libcst reports at. The call families whose ``facts_from_call`` asks
the source only ``api_call``, ``bind_arguments`` and ``value`` (pooling, adaptive pooling) run that
very function on ast calls; so does upsampling, given the port of its one tree walk (does a size
read a shape: ``_is_shape_expr``); operators runs its ``facts_from_call`` and ``power_facts`` on
ast calls and ``**`` (``FileFacts.method_call`` reads a tensor method on either tree), only its
walk (enclosing defs, scopes) is here; pickling's visitor is ported here. ``EXTRACTORS`` says which
families have one; ``static.run`` checks the others (porting) with libcst. A family's ``extract``
and its port change together: the tests that compare each port with its extractor
(``tests/test_static_fast.py``) and ``check_source`` with a full libcst parse (fixtures, fuzzing)
fail until both agree.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from modelcheck.rules import adaptive_pooling, operators, pickling, pooling, upsampling
from modelcheck.static.fast import (
    AstSource,
    Unsupported,
    Where,
    call_args,
    children,
    dotted_name,
    scoped_walk,
)
from modelcheck.static.source import never_module

Found = list[tuple[ast.AST, Any]]  # (the node a finding is reported at, the family's facts)

# ----- call families: upsampling, pooling, adaptive pooling ------------------------------------


def _is_shape_expr(expr: ast.AST, assigned: Mapping[str, Sequence[ast.expr]], seen: set[str]) -> bool:
    """upsampling's ``_is_shape_expr``: ``.shape``, ``.size()``, directly or via a local. libcst's
    visitor there sees attribute, keyword and lambda parameter names as names too; the answer does
    not depend on the order names are met in."""
    found = False
    for node in ast.walk(expr):
        kind = type(node)
        if kind is ast.Attribute:
            found = found or node.attr == "shape"
            name = node.attr
        elif kind is ast.Call:
            found = found or (type(node.func) is ast.Attribute and node.func.attr == "size")
            continue
        elif kind is ast.Name:
            name = node.id
        elif kind in (ast.keyword, ast.arg) and node.arg:
            name = node.arg
        else:
            continue
        if name in assigned and name not in seen:
            seen.add(name)
            if any(_is_shape_expr(value, assigned, seen) for value in assigned[name]):
                found = True
    return found


def _found(found: Found, node: ast.AST, facts: Any, where: Where) -> None:
    """Note a finding's node, unless an f-string holds it: check that file with libcst then."""
    if where.fstrings:
        raise Unsupported("a finding inside an f-string: ast positions there are not libcst's")
    found.append((node, facts))


def calls_with_facts(facts_from_call: Callable[[AstSource, ast.Call, Mapping[str, Sequence[ast.expr]]], Any]
                     ) -> Callable[[AstSource], Found]:
    """A call family's extractor: ``source.calls_with_facts`` on the ast tree."""

    def extract(source: AstSource) -> Found:
        found: Found = []

        def on_call(call: ast.Call, where: Where) -> None:
            facts = facts_from_call(source, call, where.assigned)
            if facts is not None:
                _found(found, call, facts, where)

        scoped_walk(source.tree, on_call)
        return found

    return extract


# ----- operators: calls, tensor methods and ``**`` in exported code ---------------------------------

_CALL_OR_BINOP = frozenset({ast.Call, ast.BinOp})


def operators_extract(source: AstSource) -> Found:
    """``operators.extract``: a call's facts from ``operators.facts_from_call``, a ``**``'s from
    ``operators.power_facts``, with what libcst's visitor keeps (scopes, enclosing defs)."""
    found: Found = []

    def on_node(node: ast.AST, where: Where) -> None:
        exported = operators.is_exported(where.functions)
        if type(node) is ast.Call:
            facts = operators.facts_from_call(source, node, where.assigned, exported)
        elif exported and type(node.op) is ast.Pow:
            facts = operators.power_facts(source, node.left, node.right)
        else:
            return
        if facts is not None:
            _found(found, node, facts, where)

    scoped_walk(source.tree, on_node, _CALL_OR_BINOP)
    return found


# ----- pickling: what gets stored on a module ---------------------------------------------------

#: what a stored value passes through on its way up (``pickling._pass_through()`` less the libcst
#: nodes ast has no counterpart of: an Arg is a keyword or a Starred here, Element and Index nothing)
_PASS_THROUGH = (ast.keyword, ast.Starred, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp,
                 ast.DictComp, ast.GeneratorExp, ast.IfExp, ast.BoolOp, ast.Subscript)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class _Scope:
    node: ast.AST | None  # FunctionDef / ClassDef / None for the module
    local_defs: dict[str, tuple[str, ast.AST]]
    lambda_names: dict[str, ast.Lambda]


class _Storage:
    """``pickling._StorageVisitor`` over an ast tree: lambdas and local defs that flow into a
    storing position, followed up through their parents."""

    def __init__(self, source: AstSource) -> None:
        self.source = source
        self.stack: list[ast.AST] = []
        self.scopes: list[_Scope] = [_Scope(None, {}, {})]
        self.found: Found = []
        self.reported: set[int] = set()

    def visit(self, node: ast.AST) -> None:
        kind = type(node)
        scoped = kind in _DEFS or kind is ast.ClassDef
        if scoped:
            if any(type(scope.node) in _DEFS for scope in self.scopes):
                self.scopes[-1].local_defs[node.name] = (
                    "local_class" if kind is ast.ClassDef else "local_function", node)
            self.scopes.append(_Scope(node, {}, {}))
        elif kind is ast.Assign and type(node.value) is ast.Lambda:
            for target in node.targets:
                if type(target) is ast.Name:  # fn = lambda ...; stored later by name
                    self.scopes[-1].lambda_names[target.id] = node.value
        elif kind is ast.Lambda:
            self._consider(node, "lambda", None, node)
        elif kind is ast.Name:
            local = self._lookup(node.id)
            if local is not None:
                self._consider(node, local[0], node.id, local[1])
        self.stack.append(node)
        for child in children(node):
            self.visit(child)
        self.stack.pop()
        if scoped:
            self.scopes.pop()

    def _lookup(self, name: str) -> tuple[str, ast.AST] | None:
        for scope in reversed(self.scopes):
            if name in scope.local_defs:
                return scope.local_defs[name]
            if name in scope.lambda_names:
                return "lambda", scope.lambda_names[name]
        return None

    def _consider(self, node: ast.AST, kind: str, name: str | None, report_at: ast.AST) -> None:
        storage = self._storage(node, kind)
        if storage is None or id(report_at) in self.reported:
            return
        if any(type(parent) is ast.JoinedStr for parent in self.stack):
            raise Unsupported("a lambda inside an f-string: ast positions there are not libcst's")
        how, certain = storage
        self.reported.add(id(report_at))
        is_lambda = kind == "lambda" and type(report_at) is ast.Lambda
        facts = pickling.StoredObjectFacts(kind, how, certain, name,
                                           captures_locals=is_lambda and self._captures(report_at),
                                           lift_blocker=lift_blocker(report_at) if is_lambda else "")
        self.found.append((report_at, facts))

    def _storage(self, node: ast.AST, kind: str) -> tuple[str, bool] | None:
        """How the value at ``node`` is stored on a module, walking up its parents."""
        child = node
        for parent in reversed(self.stack):
            if type(parent) is ast.Call:
                if child is parent.func:
                    if kind != "local_class":
                        return None  # called right away, not stored
                elif self.source.qualname(parent.func) not in pickling.WRAPPERS:
                    return self._call_storage(parent)
            elif type(parent) in (ast.Assign, ast.AugAssign, ast.AnnAssign):
                if type(parent) is ast.Assign and child is not parent.value:
                    return None
                if type(parent) is ast.AnnAssign and child is parent.annotation:
                    return None  # libcst: under an Annotation node, which stops the walk up
                return self._assign_storage(parent)
            elif type(parent) in _COMPREHENSIONS:
                if child is not getattr(parent, "elt", None) and child is not getattr(parent, "value", None):
                    return None
            elif type(parent) not in _PASS_THROUGH:
                return None
            child = parent
        return None

    def _call_storage(self, call: ast.Call) -> tuple[str, bool] | None:
        callee = dotted_name(call.func)
        if callee is None and type(call.func) is ast.Attribute and pickling.STORING_METHODS.match(call.func.attr):
            callee = call.func.attr  # self.body[0].register_forward_hook(...): the method decides
        if callee is None:
            return None
        short = callee.rsplit(".", 1)[-1]
        if pickling.STORING_METHODS.match(short):
            if short in ("setattr", "__setattr__"):
                args = call_args(call)
                first = args[0].value if args else None
                if type(first) is ast.Name and first.id == "self":
                    return self._self_storage("stored by setattr(self, ...)")
                return "stored by setattr() on an object that may be an nn.Module", False
            return f"passed to {short}()", True
        qual = self.source.qualname(call.func) or callee
        if qual in pickling.CONTAINERS:
            return f"put into {qual.rsplit('.', 1)[-1]}(...)", True
        local = self._lookup(callee)
        cls = local[1] if local and local[0] == "local_class" else self.source.local_classes.get(qual)
        if type(cls) is ast.ClassDef:
            is_module = self.source.is_module_class(cls)
            if is_module is False:
                return None
            if is_module:
                return f"passed to {short}(...)", True
            return f"passed to {short}(...), which may be an nn.Module (a base class is defined elsewhere)", False
        if never_module(qual) or qual.startswith(pickling.NOT_MODULES):
            return None
        if short[:1].isupper():
            return f"passed to {short}(...), a class defined elsewhere that may keep it on the model", False
        return None

    def _assign_storage(self, node: ast.Assign | ast.AugAssign | ast.AnnAssign) -> tuple[str, bool] | None:
        targets = node.targets if type(node) is ast.Assign else [node.target]
        for target in targets:
            base = target
            while type(base) in (ast.Subscript, ast.Attribute) and not _is_self_attr(base):
                base = base.value
            if _is_self_attr(base):
                return self._self_storage(f"assigned to {self.source.segment(target)}")
        return None

    def _self_storage(self, how: str) -> tuple[str, bool] | None:
        """Storing on ``self``: certain in an nn.Module subclass, none in a plain class."""
        cls = next((scope.node for scope in reversed(self.scopes) if type(scope.node) is ast.ClassDef), None)
        is_module = self.source.is_module_class(cls) if cls else None
        if is_module is False:
            return None
        if is_module:
            return how, True
        return f"{how}, and self may be an nn.Module (a base class is defined elsewhere)", False

    def _captures(self, node: ast.Lambda) -> bool:
        """Does the lambda read names that are neither its parameters nor module-level?"""
        params = {arg.arg for arg in _params(node.args)}
        module_names = self.source.module_names
        return any(n not in params and n not in module_names and n not in pickling.BUILTINS
                   for n in names_read(node.body))


def _params(args: ast.arguments) -> list[ast.arg]:
    return [*args.posonlyargs, *args.args, *([args.vararg] if args.vararg else []), *args.kwonlyargs,
            *([args.kwarg] if args.kwarg else [])]


def names_read(node: ast.AST) -> set[str]:
    """``source.names_read`` on an ast expression: libcst counts the parameter names of a lambda
    nested in it as read (Param holds a Name), ast has them as ``arg``."""
    found: set[str] = set()
    for child in ast.walk(node):
        if type(child) is ast.Name:
            found.add(child.id)
        elif type(child) is ast.Lambda:
            found.update(arg.arg for arg in _params(child.args))
    return found


def lift_blocker(node: ast.Lambda) -> str:
    """``pickling.lift_blocker``: why this lambda cannot become a module-level function as written."""
    for default in [*node.args.defaults, *node.args.kw_defaults]:
        if default is not None:
            try:
                ast.literal_eval(default)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                return ("a parameter default that is not a literal is evaluated where the lambda is "
                        "written; moving it could change its value")
    body_names = names_read(node.body)
    if "super" in body_names or "__class__" in body_names:
        return "the lambda calls super(), which only works inside its class"
    if any(type(child) in (ast.Yield, ast.YieldFrom, ast.Await) for child in ast.walk(node.body)):
        return "the lambda body uses yield or await"
    return ""


def _is_self_attr(node: ast.AST) -> bool:
    return type(node) is ast.Attribute and type(node.value) is ast.Name and node.value.id == "self"


def pickling_extract(source: AstSource) -> Found:
    """``pickling.extract``: every lambda or local def in the file that ends up stored on a module."""
    visitor = _Storage(source)
    visitor.visit(source.tree)
    return visitor.found


#: family name → its extractor on an ast tree
EXTRACTORS: dict[str, Callable[[AstSource], Found]] = {
    "pickling": pickling_extract,
    "upsampling": calls_with_facts(partial(upsampling.facts_from_call, is_shape_expr=_is_shape_expr)),
    # these read a call only through api_call, bind_arguments and value, which AstSource answers alike
    "pooling": calls_with_facts(pooling.facts_from_call),
    "adaptive_pooling": calls_with_facts(adaptive_pooling.facts_from_call),
    "operators": operators_extract,
}
