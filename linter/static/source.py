"""One parsed source file and the static facts rules ask of it.

Rules see a :class:`SourceFile`: the libcst tree plus answers to the questions every rule
has — what does this name refer to (``F`` → ``torch.nn.functional``), what is this value when
it is a literal or a module-level constant, which source span is this node. Anything the code
cannot know without running it is :data:`UNKNOWN`, so rules can say "may" instead of guessing.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import sys
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from modelcheck.findings import Location

if TYPE_CHECKING:
    import libcst as cst
    from libcst.metadata import CodePosition, CodeRange, MetadataWrapper

T = TypeVar("T")


class _LazyModule(types.ModuleType):
    """A module imported at its first attribute look-up. libcst takes 0.12 s to import, more than
    the rest of a pre-commit run on a file the ``ast`` path (``static.fast``) covers or that has
    no trigger; the rules modules take ``cst`` from here, so importing them does not import it."""

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later look-ups are plain attribute hits
        return getattr(module, name)


if not TYPE_CHECKING:
    cst = _LazyModule("libcst")


class _Unknown:
    """The value of an expression that static reading cannot determine."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __bool__(self) -> bool:
        raise TypeError("UNKNOWN has no truth value; compare with `is UNKNOWN`")


UNKNOWN: Any = _Unknown()

# Where torch defines a public name under a private path; qualified names are folded to the
# public spelling so rules match ``torch.nn.modules.pooling.MaxPool2d`` like ``nn.MaxPool2d``.
_PRIVATE_PREFIXES = ("torch.nn.modules.",)


def canonical(qualname: str) -> str:
    """``torch.nn.modules.pooling.MaxPool2d`` and ``torch.nn.modules.MaxPool2d`` → ``torch.nn.MaxPool2d``."""
    for prefix in _PRIVATE_PREFIXES:
        if qualname.startswith(prefix):
            return "torch.nn." + qualname[len(prefix):].rsplit(".", 1)[-1]
    return qualname


def source_lines(text: str) -> list[str]:
    """The file's lines as Python and libcst number them: ``str.splitlines`` would also break
    at form feeds and other separators that are whitespace to Python, shifting every line after.
    A lone ``\r`` (old Mac line ends) ends a line for both, like ``\r\n`` and ``\n``."""
    if "\r" in text:
        return re.split(r"\r\n?|\n", text)
    return text.split("\n")


def dotted_name(expr: cst.BaseExpression) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    if isinstance(expr, cst.Name):
        return expr.value
    if isinstance(expr, cst.Attribute):
        base = dotted_name(expr.value)
        return f"{base}.{expr.attr.value}" if base else None
    return None


class FileFacts(ABC):
    """What rules ask of a file (names, constants, classes, calls), answered once for both trees:
    libcst's (:class:`SourceFile`) and the stdlib ``ast``'s (``static.fast.AstSource``). A tree
    gives its tables (``imports``, ``star_imports``, ``constants``, ``local_classes``) and says
    what its nodes are in the abstract methods at the end."""

    imports: Mapping[str, str]
    star_imports: tuple[str, ...]
    constants: Mapping[str, Any]
    local_classes: Mapping[str, Any]

    # ----- names -----------------------------------------------------------------------
    def qualname(self, expr: Any) -> str | None:
        """The qualified name an expression refers to, resolved through the file's imports.

        Names defined in the file itself resolve to themselves (``Lambda`` → ``Lambda``).
        """
        dotted = self._dotted(expr)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head in self.imports:
            return canonical(self.imports[head] + ("." + rest if rest else ""))
        return dotted

    def resolves_to(self, expr: Any, candidates: Sequence[str]) -> str | None:
        """Which of ``candidates`` (qualified names) ``expr`` names, also via ``import *``."""
        name = self.qualname(expr)
        if name in candidates:
            return name
        if name and "." not in name and name not in self.imports and name not in self.local_classes:
            for module in self.star_imports:
                if f"{module}.{name}" in candidates:
                    return f"{module}.{name}"
        return None

    # ----- values ----------------------------------------------------------------------
    def value(self, expr: Any, _depth: int = 0) -> Any:
        """The Python value of a literal or module-level constant expression, else UNKNOWN."""
        if expr is None or _depth > 8:
            return UNKNOWN
        name = self._constant_name(expr)
        if name is not None:
            bound = self.constants.get(name)
            return UNKNOWN if bound is None else self.value(bound, _depth + 1)
        elements = self._display_elements(expr)
        if elements is not None:
            items = [self.value(element, _depth + 1) for element in elements]
            return UNKNOWN if any(item is UNKNOWN for item in items) else tuple(items)
        try:
            return self._literal(expr)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return UNKNOWN

    # ----- classes ---------------------------------------------------------------------
    def is_module_class(self, cls: Any, _seen: frozenset[str] = frozenset()) -> bool | None:
        """Does class ``cls`` (a module-level class name, or any class definition) derive from
        ``torch.nn.Module``? None when a base comes from code this file does not show."""
        node = self.local_classes.get(cls) if isinstance(cls, str) else cls
        if node is None or self._class_name(node) in _seen:
            return None
        unknown = False
        for expr in self._class_bases(node):
            qual = self.qualname(expr) or ""
            if qual.startswith(MODULE_BASES):
                return True
            if qual in self.local_classes:
                verdict = self.is_module_class(qual, _seen | {self._class_name(node)})
                if verdict:
                    return True
                unknown = unknown or verdict is None
            elif not never_module(qual):
                unknown = True
        return None if unknown else False

    # ----- calls -----------------------------------------------------------------------
    def api_of(self, func: Any, apis: Sequence[str], assigned: Mapping[str, Sequence[Any]]) -> tuple[str, bool] | None:
        """Which of ``apis`` calling ``func`` calls, and whether that is certain.

        Also through an alias: a module-level constant or a local in ``assigned`` bound to an
        API, possibly as one branch of a choice (``pool = nn.AvgPool2d if s > 1 else Same``,
        where the call is then only maybe the API).
        """
        direct = self.resolves_to(func, apis)
        if direct is not None:
            return direct, True
        name = self._constant_name(func)
        if name is None:
            return None
        values = assigned.get(name) or ([self.constants[name]] if name in self.constants else [])
        hits = [self.resolves_to(alt, apis) for value in values for alt in self._alternatives(value)]
        found = [hit for hit in hits if hit is not None]
        return (found[0], len(found) == len(hits)) if found else None

    def api_call(self, call: Any, apis: Sequence[str], assigned: Mapping[str, Sequence[Any]]
                 ) -> tuple[str, bool, Sequence[Any], bool] | None:
        """``(api, certain, args, partial)`` when ``call`` calls one of ``apis``, else None.

        ``functools.partial(api, ...)`` counts, with ``partial`` True: parameters it leaves
        unbound are supplied later, so they are unknown rather than their defaults.
        """
        hit = self.api_of(call.func, apis, assigned)
        if hit is not None:
            return hit[0], hit[1], self._call_args(call), False
        args = self._call_args(call)
        if args and args[0].keyword is None and not args[0].star and self.qualname(call.func) == "functools.partial":
            hit = self.api_of(args[0].value, apis, assigned)
            if hit is not None:
                return hit[0], hit[1], args[1:], True
        return None

    def method_call(self, call: Any) -> tuple[Any, str, Sequence[Any]] | None:
        """``(receiver, name, args)`` for a method call ``receiver.name(args)``, else None."""
        attribute = self._attribute(call.func)
        return None if attribute is None else (attribute[0], attribute[1], self._call_args(call))

    # ----- what each tree answers -------------------------------------------------------
    @staticmethod
    @abstractmethod
    def _dotted(expr: Any) -> str | None:
        """``a.b.c`` for a Name/Attribute chain, else None."""

    @staticmethod
    @abstractmethod
    def _attribute(expr: Any) -> tuple[Any, str] | None:
        """``(value, name)`` for an attribute ``value.name``, else None."""

    @staticmethod
    @abstractmethod
    def _alternatives(expr: Any) -> Iterator[Any]:
        """The values an expression may take: both branches of ``a if c else b`` and ``a or b``."""

    @abstractmethod
    def _constant_name(self, expr: Any) -> str | None:
        """A plain name's text (not ``True``, ``False``, ``None``), else None."""

    @abstractmethod
    def _display_elements(self, expr: Any) -> list[Any] | None:
        """A tuple or list display's elements, a starred one as None; None for anything else."""

    @abstractmethod
    def _literal(self, expr: Any) -> Any:
        """``ast.literal_eval`` of the node, raising what it raises."""

    @abstractmethod
    def _call_args(self, call: Any) -> Sequence[Any]:
        """The call's arguments as written, each with libcst ``Arg``'s ``keyword``, ``star``, ``value``."""

    @abstractmethod
    def _class_name(self, node: Any) -> str: ...

    @abstractmethod
    def _class_bases(self, node: Any) -> Iterator[Any]:
        """The base expressions, a subscripted one's value (``Generic[T]`` → ``Generic``), no
        keywords or starred bases."""


@dataclass
class SourceFile(FileFacts):
    """A parsed file: its text, its tree and lazily computed name and value tables."""

    path: str
    text: str
    module: cst.Module
    _wrapper: MetadataWrapper | None = field(default=None, repr=False)
    #: line i of the parsed code (1-based) is line ``line_map[i - 1]`` of ``text``; None: same
    line_map: Sequence[int] | None = field(default=None, repr=False)

    @classmethod
    def parse(
        cls, path: str, text: str, code: str | None = None, line_map: Sequence[int] | None = None
    ) -> SourceFile:
        """Parse ``text``; raises ``libcst.ParserSyntaxError`` on invalid source.

        ``code``, when given, is what gets parsed instead: some of ``text``'s lines, unchanged,
        the statements no rule can care about left out (``static.reduce_source``);
        ``line_map`` says where each came from, so locations, source lines and ``# noqa``
        comments stay those of ``text``.
        """
        if code is None:
            return cls(path, text, cst.parse_module(text))
        return cls(path, text, cst.parse_module(code), line_map=line_map)

    # ----- positions -------------------------------------------------------------------
    @cached_property
    def _codegen(self) -> Any:
        """A position-recording code generator over the module, run one top-level statement
        at a time (``_position``). What ``MetadataWrapper.resolve(PositionProvider)`` computes,
        without its extra pass over the tree, and only as far as the findings need."""
        from libcst.metadata import PositionProvider
        from libcst.metadata.position_provider import PositionProvidingCodegenState

        provider = PositionProvider()
        state = PositionProvidingCodegenState(
            default_indent=self.module.default_indent,
            default_newline=self.module.default_newline,
            provider=provider,
        )
        for line in self.module.header:
            line._codegen(state)
        return provider._computed, state, iter(self.module.body)

    def _position(self, node: cst.CSTNode) -> Any:
        try:
            computed, state, statements = self._codegen
            while node not in computed:
                next(statements)._codegen(state)
            return computed[node]
        except (ImportError, AttributeError, TypeError, StopIteration):  # libcst internals moved
            from libcst.metadata import MetadataWrapper, PositionProvider

            if self._wrapper is None:
                self._wrapper = MetadataWrapper(self.module, unsafe_skip_copy=True)
            return self._wrapper.resolve(PositionProvider)[node]

    def location(self, node: cst.CSTNode) -> Location:
        rng = self._located.get(node) or self._position(node)
        start, end = rng.start.line, rng.end.line
        if self.line_map is not None:
            start, end = self.line_map[start - 1], self.line_map[end - 1]
        return Location(self.path, start, rng.start.column + 1, end, rng.end.column + 1)

    @cached_property
    def _located(self) -> dict[cst.CSTNode, CodeRange]:
        """Positions computed by ``locate``, by node."""
        return {}

    def locate(self, nodes: Iterable[cst.CSTNode]) -> None:
        """Compute the positions of ``nodes`` at once, so ``location`` of each is a look-up.

        One code-generation pass over the module (stopping after the last statement that holds
        one of them) that records positions only for these nodes and the children their
        positions are hoisted from: libcst's ``PositionProvider`` records every node, and on a
        60,000-line function that is 3 million ranges and most of the run. Same ranges as
        ``PositionProvider`` (tests compare them on every fixture)."""
        wanted = {node for node in nodes if node not in self._located}
        if not wanted:
            return
        try:
            self._located.update(_positions_of(self.module, wanted))
        except (ImportError, AttributeError, TypeError, KeyError):  # libcst internals moved: per node, as before
            return

    @cached_property
    def lines(self) -> list[str]:
        return source_lines(self.text)

    def line_text(self, line: int) -> str:
        return self.lines[line - 1] if 0 < line <= len(self.lines) else ""

    # ----- names -----------------------------------------------------------------------
    @cached_property
    def imports(self) -> dict[str, str]:
        """Local name → qualified name, from every import statement in the file."""
        table: dict[str, str] = {}
        for node in _walk_imports(self.module):
            if isinstance(node, cst.Import):
                for alias in node.names:
                    full = dotted_name(alias.name) or ""
                    if alias.asname is not None:
                        table[_asname(alias)] = full
                    else:
                        top = full.split(".")[0]
                        table[top] = top
            elif isinstance(node.names, cst.ImportStar):
                continue
            else:
                base = _relative_prefix(node) + (dotted_name(node.module) if node.module else "")
                for alias in node.names:
                    name = dotted_name(alias.name) or ""
                    local = _asname(alias) if alias.asname is not None else name
                    table[local] = f"{base}.{name}" if base and not base.endswith(".") else base + name
        return table

    @cached_property
    def star_imports(self) -> tuple[str, ...]:
        return tuple(
            dotted_name(node.module) or ""
            for node in _walk_imports(self.module)
            if isinstance(node, cst.ImportFrom)
            and isinstance(node.names, cst.ImportStar)
            and node.module is not None
            and not node.relative
        )

    # ----- values ----------------------------------------------------------------------
    @cached_property
    def constants(self) -> dict[str, cst.BaseExpression]:
        """Module-level names bound exactly once by a plain assignment."""
        seen: dict[str, list[cst.BaseExpression]] = {}
        for stmt in self.module.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if isinstance(small, cst.Assign):
                    for target in small.targets:
                        if isinstance(target.target, cst.Name):
                            seen.setdefault(target.target.value, []).append(small.value)
                elif (isinstance(small, cst.AnnAssign) and small.value is not None
                      and isinstance(small.target, cst.Name)):
                    seen.setdefault(small.target.value, []).append(small.value)
        return {name: values[0] for name, values in seen.items() if len(values) == 1}

    @cached_property
    def module_names(self) -> frozenset[str]:
        """Every name bound at module level: imports, defs, classes and assignments."""
        names = set(self.imports)
        for stmt in self.module.body:
            if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
                names.add(stmt.name.value)
        names.update(self.constants)
        for stmt in self.module.body:
            if isinstance(stmt, cst.SimpleStatementLine):
                for small in stmt.body:
                    if isinstance(small, cst.Assign):
                        for target in small.targets:
                            names.update(
                                n.value for n in _names_in(target.target)
                            )
        return frozenset(names)

    # ----- classes ---------------------------------------------------------------------
    @cached_property
    def local_classes(self) -> dict[str, cst.ClassDef]:
        """Classes defined at module level in this file, by name."""
        return {
            stmt.name.value: stmt for stmt in self.module.body if isinstance(stmt, cst.ClassDef)
        }

    # ----- what ``FileFacts`` asks of libcst nodes -----------------------------------------
    def _constant_name(self, expr: cst.BaseExpression) -> str | None:
        if type(expr) is cst.Name and expr.value not in ("True", "False", "None"):
            return expr.value
        return None

    def _display_elements(self, expr: cst.BaseExpression) -> list[cst.BaseExpression | None] | None:
        if isinstance(expr, (cst.Tuple, cst.List)):
            return [None if isinstance(el, cst.StarredElement) else el.value for el in expr.elements]
        return None

    def _literal(self, expr: cst.BaseExpression) -> Any:
        return ast.literal_eval(self.module.code_for_node(expr).strip())

    _dotted = staticmethod(dotted_name)

    @staticmethod
    def _attribute(expr: cst.BaseExpression) -> tuple[cst.BaseExpression, str] | None:
        return (expr.value, expr.attr.value) if isinstance(expr, cst.Attribute) else None

    @staticmethod
    def _alternatives(expr: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
        return _alternatives(expr)

    def _call_args(self, call: cst.Call) -> Sequence[cst.Arg]:
        return call.args

    def _class_name(self, node: cst.ClassDef) -> str:
        return node.name.value

    def _class_bases(self, node: cst.ClassDef) -> Iterator[cst.BaseExpression]:
        for base in node.bases:
            if base.keyword is None and not base.star:
                yield base.value.value if isinstance(base.value, cst.Subscript) else base.value

#: bases from outside the file that make a class an nn.Module
MODULE_BASES = (
    "torch.nn.", "torch.jit.ScriptModule", "pytorch_lightning.LightningModule",
    "lightning.LightningModule", "lightning.pytorch.LightningModule",
)
_BUILTIN_NAMES = frozenset(dir(builtins))


def never_module(qualname: str) -> bool:
    """Builtins (``object``, ``dict``) and the standard library never make an nn.Module."""
    return qualname in _BUILTIN_NAMES or qualname.split(".")[0] in sys.stdlib_module_names


def _alternatives(expr: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    """The values an expression may take: both branches of ``a if c else b`` and ``a or b``."""
    if isinstance(expr, cst.IfExp):
        yield from _alternatives(expr.body)
        yield from _alternatives(expr.orelse)
    elif isinstance(expr, cst.BooleanOperation):
        yield from _alternatives(expr.left)
        yield from _alternatives(expr.right)
    else:
        yield expr


class Visitor:
    """A visitor for ``walk``: ``visit_<Node>`` before a node's children (False skips them),
    ``leave_<Node>`` after, dispatched as ``libcst.CSTVisitor`` does, but defined without
    importing libcst (the rules modules subclass it at import). libcst's own ``node.visit``
    needs a real ``CSTVisitor``."""

    def on_visit(self, node: Any) -> bool:
        visit = getattr(self, "visit_" + type(node).__name__, None)
        return visit is None or visit(node) is not False

    def on_leave(self, original_node: Any) -> None:
        leave = getattr(self, "leave_" + type(original_node).__name__, None)
        if leave is not None:
            leave(original_node)


class ScopedVisitor(Visitor):
    """A visitor that knows what each name in the current function was assigned.

    ``assigned`` maps a local name to every value assigned to it so far in the innermost
    function (module level outside functions): enough to see that ``size`` in
    ``F.interpolate(x, size=size)`` came from ``x.shape``, or that ``pool_fn`` is ``nn.AvgPool2d``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._scopes: list[dict[str, list[cst.BaseExpression]]] = [{}]

    @property
    def assigned(self) -> dict[str, list[cst.BaseExpression]]:
        return self._scopes[-1]

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._scopes.append({})

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._scopes.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            for name in _names_in(target.target):
                self.assigned.setdefault(name.value, []).append(node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None and isinstance(node.target, cst.Name):
            self.assigned.setdefault(node.target.value, []).append(node.value)


def _names_in(target: cst.BaseExpression) -> Iterator[cst.Name]:
    if isinstance(target, cst.Name):
        yield target
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            yield from _names_in(element.value)
    elif isinstance(target, cst.StarredElement):
        yield from _names_in(target.value)


def _asname(alias: cst.ImportAlias) -> str:
    assert alias.asname is not None
    name = alias.asname.name
    assert isinstance(name, cst.Name)
    return name.value


def _relative_prefix(node: cst.ImportFrom) -> str:
    return "." * len(node.relative)


def _walk_imports(module: cst.Module) -> Iterator[cst.Import | cst.ImportFrom]:
    """Every import statement in source order, also inside functions, classes and try/if blocks.

    Imports are statements, so only statement bodies are walked, never expressions.
    """
    return _imports_in(module.body)


@cache
def _blocks() -> tuple[type, ...]:
    return (cst.BaseCompoundStatement, cst.BaseSuite, cst.ExceptHandler, cst.ExceptStarHandler,
            cst.Else, cst.Finally, cst.MatchCase)


def _imports_in(nodes: Sequence[cst.CSTNode]) -> Iterator[cst.Import | cst.ImportFrom]:
    for node in nodes:
        if isinstance(node, (cst.Import, cst.ImportFrom)):
            yield node
        elif isinstance(node, cst.SimpleStatementLine):
            yield from _imports_in(node.body)
        elif isinstance(node, _blocks()):
            for name in ("body", "handlers", "orelse", "finalbody", "cases"):
                part = getattr(node, name, None)
                if part is not None:
                    yield from _imports_in(part if isinstance(part, (list, tuple)) else [part])


@cache
def _trivia() -> tuple[type, ...]:
    """Nodes that hold only whitespace or punctuation: no rule looks inside them."""
    return (
        cst.BaseParenthesizableWhitespace, cst.TrailingWhitespace, cst.EmptyLine, cst.Newline,
        cst.Comment, cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket,
        cst.LeftCurlyBrace, cst.RightCurlyBrace, cst.Comma, cst.Dot, cst.Semicolon, cst.AssignEqual,
        cst.Colon, cst.BaseBinaryOp, cst.BaseBooleanOp, cst.BaseCompOp, cst.BaseUnaryOp,
        cst.BaseAugOp, cst.Asynchronous, cst.ImportStar,
    )
def __getattr__(name: str) -> Any:
    """``_TRIVIA`` and ``_BLOCKS``, the tuples of libcst classes, made when first asked for."""
    if name == "_TRIVIA":
        return _trivia()
    if name == "_BLOCKS":
        return _blocks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}
_WALKED: dict[type, bool] = {}  # per type: a node worth walking into (cached: ABC checks are slow)


def _walked(kind: type) -> bool:
    verdict = _WALKED.get(kind)
    if verdict is None:
        verdict = _WALKED[kind] = issubclass(kind, cst.CSTNode) and not issubclass(kind, _trivia())
    return verdict


def walk(node: cst.CSTNode, visitor: Any) -> None:
    """``node.visit(visitor)`` for visitors that only read: the same ``visit_*``/``leave_*``
    calls, parents before children, but about 10x faster, because libcst's own traversal
    rebuilds every node it passes and this one skips whitespace and punctuation nodes."""
    if not visitor.on_visit(node):
        visitor.on_leave(node)
        return
    names = _CHILD_FIELDS.get(type(node))
    if names is None:
        names = _CHILD_FIELDS[type(node)] = tuple(f.name for f in fields(node))
    for name in names:
        value = getattr(node, name)
        if type(value) in (tuple, list):
            for child in value:
                if _walked(type(child)):
                    walk(child, visitor)
        elif _walked(type(value)):
            walk(value, visitor)
    visitor.on_leave(node)


class ReadsVisitor(Visitor):
    """Visits the names code reads: attribute names (``x.view``), keyword names (``dim=``) and the
    dotted paths of import statements are not visited as names. Subclasses add ``visit_Name``."""

    def visit_Import(self, node: cst.Import) -> bool:
        return False

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        walk(node.value, self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        walk(node.value, self)
        return False


def names_read(node: cst.CSTNode) -> set[str]:
    """The names code reads (see :class:`ReadsVisitor`)."""
    found: set[str] = set()

    class _Collect(ReadsVisitor):
        def visit_Name(self, name: cst.Name) -> None:
            found.add(name.value)

    walk(node, _Collect())
    return found


def bind_arguments(
    call: cst.Call | Sequence[cst.Arg], params: Sequence[str]
) -> tuple[dict[str, cst.BaseExpression], bool]:
    """Map a call's arguments (or an argument list) onto a signature's parameter names.

    Returns the bound expressions and whether ``*args``/``**kwargs`` make unbound parameters
    unknowable (rather than their defaults). An argument list may also be ``static.fast``'s
    (``AstSource.api_call``): the same fields on ``ast`` expressions.
    """
    bound: dict[str, cst.BaseExpression] = {}
    opaque = False
    position = 0
    for arg in call if isinstance(call, Sequence) else call.args:
        if arg.star:
            opaque = True
            continue
        if arg.keyword is not None:
            bound[arg.keyword.value] = arg.value
        else:
            if position < len(params):
                bound[params[position]] = arg.value
            position += 1
    return bound, opaque


def calls_with_facts(
    source: SourceFile, facts_from_call: Callable[[SourceFile, cst.Call, dict[str, list[cst.BaseExpression]]], T | None]
) -> Iterator[tuple[cst.Call, T]]:
    """Every call in the file for which ``facts_from_call`` returns facts: a call family's ``extract``."""
    found: list[tuple[cst.Call, T]] = []

    class _Visitor(ScopedVisitor):
        def visit_Call(self, node: cst.Call) -> None:
            facts = facts_from_call(source, node, self.assigned)
            if facts is not None:
                found.append((node, facts))

    walk(source.module, _Visitor())
    return iter(found)


# ----- positions of chosen nodes, in one pass -----------------------------------------------

class _NoRecord:
    """The context ``record_syntactic_position`` returns for a node nobody asked about."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NO_RECORD = _NoRecord()


class _Syntactic:
    """``PositionProvidingCodegenState.record_syntactic_position`` for one wanted node, with
    token indices for positions: the range may be hoisted from a child (``start_node``/``end_node``)."""

    __slots__ = ("end_node", "node", "start", "start_node", "state")

    def __init__(self, state: Any, node: cst.CSTNode, start_node: Any, end_node: Any) -> None:
        self.state, self.node, self.start_node, self.end_node = state, node, start_node, end_node

    def __enter__(self) -> None:
        self.start = len(self.state.tokens)

    def __exit__(self, *exc: object) -> None:
        spans = self.state.spans
        start = spans[id(self.start_node)][0] if self.start_node is not None else self.start
        end = spans[id(self.end_node)][1] if self.end_node is not None else len(self.state.tokens)
        spans[id(self.node)] = (start, end)


def _recording_state(module: cst.Module, wanted: set[int]) -> Any:
    from libcst._nodes.internal import CodegenState

    class _State(CodegenState):
        """Code generation that notes, for the wanted nodes only, the token index where each
        starts and ends: what PositionProvidingCodegenState records for all nodes, in line and
        column, as it goes. Line and column come after, from the tokens (``_positions_of``).
        Nodes go by ``id``: ``CSTNode.__hash__`` is a Python function, called 6 times a node."""

        def before_codegen(self, node: cst.CSTNode) -> None:
            if id(node) in wanted:
                self.stack.append((node, len(self.tokens)))

        def after_codegen(self, node: cst.CSTNode) -> None:
            if id(node) in wanted and self.stack and self.stack[-1][0] is node:
                start = self.stack.pop()[1]
                if id(node) not in self.spans:  # a syntactic position was recorded: it stays
                    self.spans[id(node)] = (start, len(self.tokens))

        def record_syntactic_position(self, node: cst.CSTNode, *, start_node: Any = None,
                                      end_node: Any = None) -> Any:
            if id(node) not in wanted:
                return _NO_RECORD
            for child in (start_node, end_node):
                if child is not None:
                    wanted.add(id(child))  # generated inside the with-block, after this call
            return _Syntactic(self, node, start_node, end_node)

    state = _State(default_indent=module.default_indent, default_newline=module.default_newline)
    state.stack = []
    state.spans = {}
    return state


_NEWLINES = re.compile(r"\r\n?|\n")


def _positions_of(module: cst.Module, nodes: set[cst.CSTNode]) -> dict[cst.CSTNode, CodeRange]:
    """The ``PositionProvider`` ranges of ``nodes``, found by one code-generation pass."""
    from libcst.metadata import CodePosition, CodeRange

    targets = {id(node) for node in nodes}  # the tree holds every node: ids stay unique
    wanted = set(targets)
    state = _recording_state(module, wanted)
    for line in module.header:
        line._codegen(state)
    spans = state.spans
    for statement in module.body:
        if not targets:
            break
        statement._codegen(state)
        targets.difference_update([key for key in targets if key in spans])
    # token index -> (line, column), as PositionProvidingCodegenState counts: per token,
    # "\r\n", "\r" and "\n" each end a line
    tokens = state.tokens
    indices = sorted({index for node in nodes if id(node) in spans for index in spans[id(node)]})
    at: dict[int, CodePosition] = {}
    line, column, done = 1, 0, 0
    for index in indices:
        chunk = "".join(tokens[done:index])
        if "\r" in chunk:  # a token ending in "\r" before one starting with "\n": count per token
            for token in tokens[done:index]:
                parts = _NEWLINES.split(token)
                if len(parts) == 1:
                    column += len(token)
                else:
                    line += len(parts) - 1
                    column = len(parts[-1])
        elif "\n" in chunk:
            line += chunk.count("\n")
            column = len(chunk) - chunk.rfind("\n") - 1
        else:
            column += len(chunk)
        done = index
        at[index] = CodePosition(line, column)
    return {node: CodeRange(at[spans[id(node)][0]], at[spans[id(node)][1]]) for node in nodes if id(node) in spans}
