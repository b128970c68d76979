"""The report path without libcst: what rules ask of a file, answered from the stdlib ``ast``.

libcst imports in 0.12 s and parses 20-60x slower than ``ast``: a 650-line module-level
``nn.Sequential`` (Lua-converted models) takes 0.2 s, a generated 60,000-call module 13 s.
Reporting needs facts and positions only, and ``ast`` has both, so the families whose extraction
``static.fast_rules`` ports run on an ``ast`` tree of the same reduced code, and libcst is left to
the porting family and to ``--fix``. :class:`AstSource` answers what :class:`~.source.SourceFile`
answers (names, constants, classes, calls) with the very same code (``source.FileFacts``), telling
it only what ``ast`` nodes are; ``children`` lists a node's children in the order libcst's fields have
them, so scopes and first sightings come out the same. Where a reading could differ from libcst's
(a form feed, a position inside an f-string), :class:`Unsupported` sends the file to the libcst
path. The tests that compare ``check_source`` with a full libcst parse
(fixtures, fuzzing) hold both paths to the same findings.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from modelcheck.findings import Location
from modelcheck.static.source import FileFacts


class Unsupported(Exception):
    """Something the ast path would not report exactly as libcst does: check with libcst."""


class Keyword(NamedTuple):
    """A keyword argument's name, as libcst's ``Arg.keyword`` holds it (``.value``)."""

    value: str


class Arg(NamedTuple):
    """A call argument with the fields of libcst's ``Arg``, so ``source.bind_arguments`` and the
    families' ``facts_from_call`` read it alike: ``keyword``, ``star`` ("", "*" or "**") and ``value``."""

    keyword: Keyword | None
    star: str
    value: ast.expr


def call_args(call: ast.Call) -> list[Arg]:
    """The arguments in the order they are written (``ast`` keeps keywords apart)."""
    args = [Arg(None, "*", a.value) if type(a) is ast.Starred else Arg(None, "", a) for a in call.args]
    if not call.keywords:
        return args
    keywords = [Arg(Keyword(k.arg) if k.arg else None, "" if k.arg else "**", k.value) for k in call.keywords]
    if not _interleaved(call):
        return args + keywords
    nodes = [*call.args, *call.keywords]
    order = sorted(range(len(nodes)), key=lambda i: (nodes[i].lineno, nodes[i].col_offset))
    both = [*args, *keywords]
    return [both[i] for i in order]


def _interleaved(call: ast.Call) -> bool:
    """Whether a keyword may be written before a positional argument: only a ``*args`` may
    follow a keyword (``f(a=1, *b)``), anything else after one is a syntax error."""
    return bool(call.keywords) and any(type(arg) is ast.Starred for arg in call.args)


def dotted_name(expr: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None. ``True``, ``False`` and ``None`` are
    names too, as in libcst (``class A(True)`` has a builtin for a base, not an unknown one)."""
    if type(expr) is ast.Name:
        return expr.id
    if type(expr) is ast.Constant and any(expr.value is named for named in _NAMED_CONSTANTS):
        return repr(expr.value)  # by identity: 1 == True
    if type(expr) is ast.Attribute:
        base = dotted_name(expr.value)
        return f"{base}.{expr.attr}" if base else None
    return None


def names_in(target: ast.AST) -> Iterator[str]:
    """The names an assignment target binds (``a``, ``a, *b``)."""
    if type(target) is ast.Name:
        yield target.id
    elif type(target) in (ast.Tuple, ast.List):
        for element in target.elts:
            yield from names_in(element)
    elif type(target) is ast.Starred:
        yield from names_in(target.value)


def alternatives(expr: ast.expr) -> Iterator[ast.expr]:
    """The values an expression may take: both branches of ``a if c else b`` and ``a or b``."""
    if type(expr) is ast.IfExp:
        yield from alternatives(expr.body)
        yield from alternatives(expr.orelse)
    elif type(expr) is ast.BoolOp:
        for value in expr.values:
            yield from alternatives(value)
    else:
        yield expr


_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_NAMED_CONSTANTS = (True, False, None)
_SCOPES = (*_DEFS, ast.ClassDef)
_STATEMENT_LISTS = ("body", "handlers", "orelse", "finalbody", "cases")


@dataclass
class AstSource(FileFacts):
    """A file's reduced code parsed by ``ast``: the questions ``SourceFile`` answers, and positions."""

    path: str
    text: str
    tree: ast.Module
    code_lines: list[str]  # the parsed code's lines: ast columns are UTF-8 offsets into them
    line_map: Sequence[int] | None = None  # as SourceFile.line_map

    @classmethod
    def parse(cls, path: str, text: str, code: str, line_map: Sequence[int] | None) -> AstSource:
        """The reduced code's tree, or the whole text's if that does not parse (as ``static._parse``)."""
        if "\r" in text.replace("\r\n", ""):
            raise Unsupported("a lone CR: lines libcst and the pre-screen count their own way")
        for whole, parsed in ((False, code), (True, text)):
            if "\f" in parsed:
                raise Unsupported("a form feed: indents libcst may not read")
            try:
                tree = ast.parse(parsed)
            except SyntaxError as exc:  # a layout the pre-screen misread: parse it all
                if whole:
                    raise Unsupported(str(exc)) from exc
                continue
            except (ValueError, RecursionError, MemoryError) as exc:
                raise Unsupported(str(exc)) from exc
            return cls(path, text, tree, parsed.split("\n"), None if whole else line_map)
        raise AssertionError("unreachable")

    # ----- positions -------------------------------------------------------------------
    def location(self, node: Any) -> Location:
        """The node's span as libcst's PositionProvider gives it (1-based columns): the same for
        calls, lambdas, defs and classes (checked on timm, torchvision and the standard library),
        except a def ending in ``;``, which libcst ends before."""
        line, end_line = node.lineno, node.end_lineno
        column = self._column(line, node.col_offset)
        end_column = self._column(end_line, node.end_col_offset)
        if type(node) in _SCOPES and self.code_lines[end_line - 1][end_column - 1:end_column] == ";":
            raise Unsupported("a def or class ending in a semicolon")
        if self.line_map is not None:
            line, end_line = self.line_map[line - 1], self.line_map[end_line - 1]
        return Location(self.path, line, column + 1, end_line, end_column + 1)

    def _column(self, line: int, offset: int) -> int:
        text = self.code_lines[line - 1]
        return offset if text.isascii() else len(text.encode("utf-8")[:offset].decode("utf-8"))

    def segment(self, node: Any) -> str:
        """The source text of a node on one line, as libcst's ``code_for_node`` writes it. A node
        over several lines (libcst writes its continuation lines less the block's indent) or in
        parentheses of its own (libcst's text has them, the ``ast`` span not) is Unsupported."""
        line = self.code_lines[node.lineno - 1]
        start, end = self._column(node.lineno, node.col_offset), self._column(node.lineno, node.end_col_offset)
        if node.end_lineno != node.lineno or line[end:].lstrip(" \t").startswith((")", "\\")) or not line[end:].strip():
            raise Unsupported("a target over lines or in parentheses")
        return line[start:end]

    # ----- names -----------------------------------------------------------------------
    @cached_property
    def _import_nodes(self) -> list[ast.Import | ast.ImportFrom]:
        """Every import statement in source order, in statement bodies at any depth."""
        found: list[ast.Import | ast.ImportFrom] = []

        def visit(statements: list[Any]) -> None:
            for node in statements:
                if type(node) in (ast.Import, ast.ImportFrom):
                    found.append(node)
                elif isinstance(node, (ast.stmt, ast.excepthandler, ast.match_case)):
                    for name in _STATEMENT_LISTS:
                        part = getattr(node, name, None)
                        if part:
                            visit(part)

        visit(self.tree.body)
        return found

    @cached_property
    def imports(self) -> dict[str, str]:
        """Local name → qualified name, from every import statement in the file."""
        table: dict[str, str] = {}
        for node in self._import_nodes:
            if type(node) is ast.Import:
                for alias in node.names:
                    if alias.asname is not None:
                        table[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        table[top] = top
            elif node.names[0].name == "*":
                continue
            else:
                base = "." * node.level + (node.module or "")
                for alias in node.names:
                    local = alias.asname if alias.asname is not None else alias.name
                    table[local] = f"{base}.{alias.name}" if base and not base.endswith(".") else base + alias.name
        return table

    @cached_property
    def star_imports(self) -> tuple[str, ...]:
        return tuple(node.module for node in self._import_nodes if type(node) is ast.ImportFrom
                     and node.names[0].name == "*" and node.module is not None and not node.level)

    # ----- values ----------------------------------------------------------------------
    @cached_property
    def constants(self) -> dict[str, ast.expr]:
        """Module-level names bound exactly once by a plain assignment."""
        seen: dict[str, list[ast.expr]] = {}
        for stmt in self.tree.body:
            if type(stmt) is ast.Assign:
                for target in stmt.targets:
                    if type(target) is ast.Name:
                        seen.setdefault(target.id, []).append(stmt.value)
            elif type(stmt) is ast.AnnAssign and stmt.value is not None and type(stmt.target) is ast.Name:
                seen.setdefault(stmt.target.id, []).append(stmt.value)
        return {name: values[0] for name, values in seen.items() if len(values) == 1}

    @cached_property
    def module_names(self) -> frozenset[str]:
        """Every name bound at module level: imports, defs, classes and assignments."""
        names = set(self.imports)
        names.update(stmt.name for stmt in self.tree.body if type(stmt) in (*_DEFS, ast.ClassDef))
        names.update(self.constants)
        for stmt in self.tree.body:
            if type(stmt) is ast.Assign:
                for target in stmt.targets:
                    names.update(names_in(target))
        return frozenset(names)

    # ----- classes ---------------------------------------------------------------------
    @cached_property
    def local_classes(self) -> dict[str, ast.ClassDef]:
        """Classes defined at module level in this file, by name."""
        return {stmt.name: stmt for stmt in self.tree.body if type(stmt) is ast.ClassDef}

    # ----- what ``FileFacts`` asks of ast nodes --------------------------------------------
    def _constant_name(self, expr: ast.expr) -> str | None:
        return expr.id if type(expr) is ast.Name else None

    def _display_elements(self, expr: ast.expr) -> list[ast.expr | None] | None:
        if type(expr) in (ast.Tuple, ast.List):
            return [None if type(element) is ast.Starred else element for element in expr.elts]
        return None

    def _literal(self, expr: ast.expr) -> Any:
        return expr.value if type(expr) is ast.Constant else ast.literal_eval(expr)

    _dotted = staticmethod(dotted_name)
    _alternatives = staticmethod(alternatives)
    _call_args = staticmethod(call_args)

    @staticmethod
    def _attribute(expr: ast.expr) -> tuple[ast.expr, str] | None:
        return (expr.value, expr.attr) if type(expr) is ast.Attribute else None

    def _class_name(self, node: ast.ClassDef) -> str:
        return node.name

    def _class_bases(self, node: ast.ClassDef) -> Iterator[ast.expr]:
        for base in node.bases:  # keywords are apart in ast
            if type(base) is not ast.Starred:
                yield base.value if type(base) is ast.Subscript else base


# ----- traversal in libcst's order ----------------------------------------------------------

_NOT_CHILDREN = frozenset({"ctx", "op", "ops", "id", "attr", "arg", "kind", "conversion", "is_async", "level",
                           "module", "type_comment", "type_ignores", "simple", "asname", "name", "names",
                           "kwd_attrs", "rest", "tag"})
_FIELDS: dict[type, tuple[str, ...]] = {ast.Constant: ()}


def _class_children(node: ast.ClassDef) -> list[ast.AST]:
    return [*node.body, *node.bases, *node.keywords, *node.decorator_list]  # libcst: body first


def _handler_children(node: ast.ExceptHandler) -> list[ast.AST]:
    return [*node.body, *([node.type] if node.type is not None else [])]


def _case_children(node: ast.match_case) -> list[ast.AST]:
    return [node.pattern, *node.body, *([node.guard] if node.guard is not None else [])]


def _call_children(node: ast.Call) -> list[ast.AST]:
    if not _interleaved(node):
        return [node.func, *node.args, *node.keywords]
    return [node.func, *sorted([*node.args, *node.keywords], key=lambda n: (n.lineno, n.col_offset))]


def _dict_children(node: ast.Dict) -> list[ast.AST]:
    out: list[ast.AST] = []
    for key, value in zip(node.keys, node.values, strict=True):
        if key is not None:
            out.append(key)
        out.append(value)
    return out


def _arguments_children(node: ast.arguments) -> list[ast.AST]:
    """libcst's Parameters: params, *args, keyword-only, **kwargs, then positional-only; each
    parameter with its default."""
    positional = [*node.posonlyargs, *node.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(node.defaults)) + list(node.defaults)
    pairs = list(zip(positional, defaults, strict=True))
    posonly, plain = pairs[:len(node.posonlyargs)], pairs[len(node.posonlyargs):]
    keyword_only = list(zip(node.kwonlyargs, node.kw_defaults, strict=True))
    out: list[ast.AST] = []
    for group in (plain, [(node.vararg, None)], keyword_only, [(node.kwarg, None)], posonly):
        for param, default in group:
            if param is not None:
                out.append(param)
            if default is not None:
                out.append(default)
    return out


_SPECIAL: dict[type, Callable[[Any], list[ast.AST]]] = {
    ast.ClassDef: _class_children, ast.ExceptHandler: _handler_children, ast.match_case: _case_children,
    ast.Call: _call_children, ast.Dict: _dict_children, ast.arguments: _arguments_children,
}


def children(node: ast.AST) -> list[ast.AST]:
    """A node's child nodes, in the order libcst's ``walk`` reaches the same constructs."""
    kind = type(node)
    special = _SPECIAL.get(kind)
    if special is not None:
        return special(node)
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(name for name in kind._fields if name not in _NOT_CHILDREN)
    out: list[ast.AST] = []
    for name in names:
        value = getattr(node, name, None)
        if type(value) is list:  # of nodes only: the lists that hold None or strings are left out above
            out.extend(value)
        elif isinstance(value, ast.AST):
            out.append(value)
    return out


@dataclass
class Where:
    """Where ``scoped_walk`` is in the tree: what ``source.ScopedVisitor`` keeps, and what the
    visitors of the call families keep beside it."""

    #: per enclosing function (the module first): what each name was assigned so far
    scopes: list[dict[str, list[ast.expr]]] = field(default_factory=lambda: [{}])
    functions: list[str] = field(default_factory=list)  # the enclosing defs' names, outermost first
    fstrings: int = 0  # how many f-strings hold the node: ast positions there are not libcst's

    @property
    def assigned(self) -> dict[str, list[ast.expr]]:
        """What each name of the innermost function (module level outside functions) was assigned so far."""
        return self.scopes[-1]


def scoped_walk(tree: ast.AST, on_node: Callable[[ast.AST, Where], None],
                kinds: frozenset[type] = frozenset({ast.Call})) -> None:
    """``on_node(node, where)`` for every node of one of ``kinds``, in walk order, with the
    scopes as ``source.ScopedVisitor`` keeps them (a def's scope and name are pushed before its
    decorators and defaults are visited, as libcst's ``visit_FunctionDef`` comes first)."""
    where = Where()
    scopes, functions = where.scopes, where.functions

    def visit(node: ast.AST) -> None:
        kind = type(node)
        if kind in kinds:
            on_node(node, where)
        if kind is ast.Assign or kind is ast.AnnAssign:
            _bind(node, scopes[-1])
        elif kind in _DEFS:
            scopes.append({})
            functions.append(node.name)
            for child in children(node):
                visit(child)
            functions.pop()
            scopes.pop()
            return
        elif kind is ast.JoinedStr:
            where.fstrings += 1
            for child in children(node):
                visit(child)
            where.fstrings -= 1
            return
        for child in children(node):
            visit(child)

    visit(tree)


def _bind(node: ast.Assign | ast.AnnAssign, scope: dict[str, list[ast.expr]]) -> None:
    """Record what an assignment binds in ``scope``, as ``source.ScopedVisitor`` does: every name
    of a plain assignment's targets, the single name of an annotated one with a value."""
    if type(node) is ast.Assign:
        for target in node.targets:
            for name in names_in(target):
                scope.setdefault(name, []).append(node.value)
    elif node.value is not None and type(node.target) is ast.Name:
        scope.setdefault(node.target.id, []).append(node.value)
