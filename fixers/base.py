"""What every fixer shares: the plain data a fix is made of, and the code that applies it.

A fixer reads one parsed file (:class:`modelcheck.static.source.SourceFile`) and the findings in it
and returns, per finding, either an :class:`Edit` (how to rewrite the source, how safe that
is) or a :class:`Decline` (why not). :func:`apply_edits` turns chosen edits into new source
text with a libcst transformer, so comments and formatting outside the rewritten expressions
stay byte for byte.

How far an edit may be trusted is two typed facts, after ruff's ``Applicability``:
:class:`Applicability` (may ``--fix`` apply it, or only ``--unsafe-fixes``, or neither) and
:class:`Exactness` (how the edit is known to compute what the code computed before, and so what
checking it on a model must show).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import libcst as cst
from modelcheck.static.source import SourceFile, names_read, walk


@functools.total_ordering
class _Ranked(Enum):
    """Members ordered as declared, weakest first, so ``a < b`` reads "a is weaker than b"."""

    def __lt__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        names = type(self)._member_names_
        return names.index(self.name) < names.index(other.name)  # type: ignore[attr-defined]


class Applicability(_Ranked):
    """Which flag applies an edit, ordered ``DISPLAY_ONLY < UNSAFE < SAFE`` (ruff's levels).

    The value is what ``--format json`` writes in a fix record's ``safety``.
    """

    #: shown in the report, never written: the rewrite is a suggestion to apply by hand
    DISPLAY_ONLY = "display-only"
    #: exact only for the configured input shape(s), or the exported graph is tied to the traced
    #: input size: only ``--fix --unsafe-fixes`` applies it
    UNSAFE = "unsafe"
    #: computes the same for every input, and the exported graph is not tied to one input size:
    #: ``--fix`` applies it
    SAFE = "safe"

    @classmethod
    def least(cls, *, unsafe_fixes: bool) -> Applicability:
        """The least applicability an edit needs to be applied under these flags."""
        return cls.UNSAFE if unsafe_fixes else cls.SAFE


class Exactness(_Ranked):
    """How an edit is known to keep the model's outputs, ordered weakest first.

    Only ``BY_CONSTRUCTION`` edits apply without a model to check them on (``--static-only``);
    the others wait for one. The value of :attr:`check` is what the ``verify_fix`` job compares
    with (``"bitwise"`` or ``"numeric"``).
    """

    #: a model must give outputs equal to float rounding (``1e-6`` relative): a rewrite that
    #: sums in another order, such as the exact bilinear upsampling
    NUMERIC = "numeric"
    #: a model must give bit-identical outputs: the rewrite is exact, but only for what a run shows
    #: (the input sizes a pool received)
    BITWISE = "bitwise"
    #: the same computation by construction (a lambda becomes a ``def`` with its body): applies
    #: without a model; where a model is built from the file, it is still checked bit for bit
    BY_CONSTRUCTION = "by-construction"

    @property
    def needs_model(self) -> bool:
        return self is not Exactness.BY_CONSTRUCTION

    @property
    def check(self) -> Exactness:
        """What a model run must show for this edit: ``BITWISE`` or ``NUMERIC``."""
        return Exactness.NUMERIC if self is Exactness.NUMERIC else Exactness.BITWISE


Rewrite = Callable[[cst.CSTNode], cst.CSTNode]


@dataclass(frozen=True)
class Helper:
    """A module-level statement a fix needs (a function or class), inserted once per file."""

    key: str  # identical keys are inserted once: identical lambdas share one function
    name: str
    #: the statement's source, indented with four spaces; or a function giving it once the
    #: rewrites ran (a lifted lambda's body may hold another fix, e.g. a rewritten upsample)
    code: str | Callable[[], str]

    def text(self) -> str:
        return self.code() if callable(self.code) else self.code


@dataclass(frozen=True)
class Edit:
    """One rewrite at one finding. ``rewrites`` maps ids of original nodes to node rewriters."""

    code: str
    line: int
    summary: str  # what changes, for the report: "lambda x: x -> _identity"
    applicability: Applicability = Applicability.SAFE
    exactness: Exactness = Exactness.BITWISE
    reason: str = ""  # why it is unsafe, or what it assumes
    rewrites: tuple[tuple[int, Rewrite], ...] = ()
    helpers: tuple[Helper, ...] = ()
    imports: tuple[str, ...] = ()  # top-level modules the rewritten code names ("operator")
    also: tuple[str, ...] = ()  # other codes on the same line this edit resolves too
    anchors: tuple[cst.CSTNode, ...] = field(default=(), compare=False)  # nodes rewritten


@dataclass(frozen=True)
class Decline:
    """A finding the fixer will not fix, and why (shown to the user)."""

    code: str
    line: int
    reason: str


Decision = Edit | Decline


@dataclass
class FixContext:
    """What a fixer may know beyond the source: the target, and shapes seen at run time.

    ``call_shapes`` maps (real path, line) to the input shapes a pooling or upsampling call
    there received when the model ran on the configured input (the verify job's reference
    run); empty when no model ran.
    """

    target_name: str
    opset: int
    call_shapes: dict[tuple[str, int], list[tuple[int, ...]]] = field(default_factory=dict)


class Names:
    """Collision-free names for inserted helpers: never a name the file already uses."""

    def __init__(self, source: SourceFile) -> None:
        self.used = set(names_in(source.module)) | set(source.module_names)
        self.by_key: dict[str, str] = {}

    def fresh(self, base: str, key: str | None = None) -> str:
        """A name like ``base`` nobody uses yet; the same key gets the same name again."""
        if key is not None and key in self.by_key:
            return self.by_key[key]
        base = re.sub(r"\W", "_", base) or "_helper"
        name, n = base, 2
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        if key is not None:
            self.by_key[key] = name
        return name


def names_in(node: cst.CSTNode) -> Iterable[str]:
    """Every identifier written anywhere under ``node`` (names, attributes, parameters)."""
    found: set[str] = set()

    class _Collect(cst.CSTVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.add(name.value)

    node.visit(_Collect())
    return found


# ----- module-level names a rewrite relies on ----------------------------------------------

#: statements that bind names, and the field holding the name(s) each binds
_BINDING_FIELD: dict[type, str] = {
    cst.AssignTarget: "target", cst.AnnAssign: "target", cst.AugAssign: "target", cst.For: "target",
    cst.CompFor: "target", cst.NamedExpr: "target", cst.AsName: "name",
}


def binds_name(source: SourceFile, name: str) -> bool:
    """Is ``name`` bound anywhere in the file other than by ``import name``?

    Parameters, assignments, loop targets, ``def``/``class`` names, ``import x as name`` and
    ``from x import name`` all count: any of them could shadow the module a rewrite refers to by that name.
    """
    found = False

    class _Visitor(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            nonlocal found
            if isinstance(node, (cst.Param, cst.FunctionDef, cst.ClassDef)):
                found = found or node.name.value == name
            elif type(node) in _BINDING_FIELD:
                found = found or name in names_in(getattr(node, _BINDING_FIELD[type(node)]))
            elif isinstance(node, cst.ImportFrom) and not isinstance(node.names, cst.ImportStar):
                found = found or any(alias.asname is None and isinstance(alias.name, cst.Name)
                                     and alias.name.value == name for alias in node.names)
            return not found

    walk(source.module, _Visitor())
    return found


def module_name_usable(source: SourceFile, module: str) -> bool:
    """Can rewritten code say ``module.attr`` and mean the standard module ``module``?

    True when the file imports it under its own name and binds that name to nothing else, or
    when the name is not used at all (an ``import module`` is then added).
    """
    if source.imports.get(module) == module:
        return not binds_name(source, module)
    return module not in names_read(source.module) and not binds_name(source, module)


def leading_block_end(module: cst.Module) -> int:
    """Index just past the docstring and the imports at the top of the file."""
    index = 0
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            break
        if not all(
            isinstance(small, (cst.Import, cst.ImportFrom))
            or (isinstance(small, cst.Expr) and isinstance(small.value, (cst.SimpleString, cst.ConcatenatedString)))
            for small in stmt.body
        ):
            break
        index += 1
    return index


def imported_in_leading_block(module: cst.Module, name: str) -> bool:
    """Is ``import name`` among the imports at the top of the file?"""
    for stmt in module.body[: leading_block_end(module)]:
        assert isinstance(stmt, cst.SimpleStatementLine)
        for small in stmt.body:
            if isinstance(small, cst.Import):
                for alias in small.names:
                    if alias.asname is None and isinstance(alias.name, cst.Name) and alias.name.value == name:
                        return True
    return False


# ----- applying edits ----------------------------------------------------------------------

class ApplyError(ValueError):
    """The edits could not be turned into valid source; nothing is written."""


class _Rewriter(cst.CSTTransformer):
    def __init__(self, rewrites: dict[int, list[Rewrite]]) -> None:
        self.rewrites = rewrites

    def on_leave(self, original_node: cst.CSTNode, updated_node: cst.CSTNode):  # type: ignore[override]
        for rewrite in self.rewrites.get(id(original_node), ()):
            updated_node = rewrite(updated_node)
        return updated_node


def _top_level_index(module: cst.Module, anchors: Sequence[cst.CSTNode]) -> int:
    """Index of the first top-level statement holding one of ``anchors``."""
    wanted = {id(a) for a in anchors}
    for index, stmt in enumerate(module.body):
        hit = False

        class _Find(cst.CSTVisitor):
            def on_visit(self, node: cst.CSTNode) -> bool:
                nonlocal hit
                if id(node) in wanted:
                    hit = True
                return not hit

        stmt.visit(_Find())
        if hit:
            return index
    return len(module.body)


def _two_blank_lines(stmt: cst.BaseStatement) -> cst.BaseStatement:
    """PEP 8 spacing before a def/class: at least two blank lines above its comments."""
    lines = list(stmt.leading_lines)
    blanks = 0
    for line in lines:
        if line.comment is None:
            blanks += 1
        else:
            break
    if blanks >= 2:
        return stmt
    return stmt.with_changes(leading_lines=[cst.EmptyLine()] * (2 - blanks) + lines)


def apply_edits(source: SourceFile, edits: Sequence[Edit]) -> str:
    """The file's new text with ``edits`` applied; raises ApplyError if it would not parse."""
    if not edits:
        return source.text
    rewrites: dict[int, list[Rewrite]] = {}
    for edit in edits:
        for node_id, rewrite in edit.rewrites:
            rewrites.setdefault(node_id, []).append(rewrite)
    helpers: dict[str, Helper] = {}
    for edit in edits:
        for helper in edit.helpers:
            helpers.setdefault(helper.key, helper)
    imports = sorted({module for edit in edits for module in edit.imports
                      if not imported_in_leading_block(source.module, module)})

    original = source.module
    anchor = _top_level_index(original, [a for edit in edits for a in edit.anchors])
    insert_at = min(leading_block_end(original), anchor)
    new = original.visit(_Rewriter(rewrites))
    assert isinstance(new, cst.Module)
    body = list(new.body)

    if helpers:
        block = cst.parse_module("".join(h.text().strip() + "\n" for h in helpers.values()))
        statements = [_two_blank_lines(stmt) for stmt in block.body]
        if insert_at < len(body):
            body[insert_at] = _two_blank_lines(body[insert_at])
        body[insert_at:insert_at] = statements
    if imports:
        import_at = leading_block_end(original)
        lines = [cst.parse_statement(f"import {module}\n") for module in imports]
        if import_at == 0 and original.body and _is_docstring(original.body[0]):
            import_at = 1
        body[import_at:import_at] = lines
    text = new.with_changes(body=body).code
    try:
        compile(text, source.path, "exec", dont_inherit=True, flags=0x400)
        cst.parse_module(text)
    except (SyntaxError, ValueError, cst.ParserSyntaxError) as exc:
        raise ApplyError(f"{source.path}: the fixed source would not parse ({exc}); nothing written") from None
    return text


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def code_of(node: cst.CSTNode) -> str:
    """Source text of a node on its own (whitespace as written inside it)."""
    return cst.Module(body=[]).code_for_node(node)


def replace_with(new: cst.BaseExpression) -> Rewrite:
    """A rewrite that puts ``new`` in place of the node, keeping the node's own parentheses."""

    def rewrite(node: cst.CSTNode) -> cst.CSTNode:
        lpar = getattr(node, "lpar", ())
        rpar = getattr(node, "rpar", ())
        if lpar and hasattr(new, "lpar"):
            return new.with_changes(lpar=lpar, rpar=rpar)
        return new

    return rewrite
