"""MC401-MC405: Python 3 porting fixes, every one line-preserving and exact by construction.

Each rewrite keeps the statement on its line (a split import becomes ``import os; from .
import config``), so line numbers stay those of the original file: tracebacks, findings and
``# noqa`` comments keep pointing at the right place, and the build step can import unported
code in memory through :func:`port_source`.

- MC401 ``import config`` → ``from . import config``; ``from config import a`` → ``from .config
  import a``: the module Python 2 imported. Declined for ``import X.Y`` and for files that are
  also run as scripts.
- MC402 ``a / b`` → ``a // b`` (``/=`` → ``//=``): Python 2's meaning for int operands.
- MC403 ``xrange`` → ``range``, ``unicode`` → ``str``, ``long`` → ``int``, ``basestring`` →
  ``(str, bytes)`` inside isinstance/issubclass.
- MC404 ``from torchvision.models.utils import load_state_dict_from_url`` → ``from torch.hub
  import ...``; ``from torch._six import container_abcs, string_classes`` → ``import
  collections.abc as container_abcs; string_classes = (str, bytes)`` (and int_classes, inf, nan).
- MC405 ``d.iteritems()`` → ``d.items()`` where it is iterated, else ``iter(d.items())``.

Before::

    import resnext_101_32x4d_
    from config import resnext101_32_path
    down_dim = in_dim / 2
    for i in xrange(3):

After::

    from . import resnext_101_32x4d_
    from .config import resnext101_32_path
    down_dim = in_dim // 2
    for i in range(3):
"""

from __future__ import annotations

import dataclasses
import re
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
    apply_edits,
    code_of,
)
from modelcheck.rules import porting
from modelcheck.static.source import SourceFile, dotted_name, walk

CODES = ("MC401", "MC402", "MC403", "MC404", "MC405")
#: verification order (first: the other fixers' models may not even build without it)
ORDER = 0
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = False
_CODE_OF = {rule.kind: rule.code for rule in porting.RULES}  # type: ignore[attr-defined]


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext | None = None,
         names: Names | None = None) -> list[Decision]:
    """An Edit or a Decline for every MC4xx finding in ``source``."""
    wanted = {(f.code, f.location.line) for f in findings if f.code in CODES}
    return [d for d in _decisions(source) if (d.code, d.line) in wanted]


def _decisions(source: SourceFile, relative_imports: bool = True) -> list[Decision]:
    """A decision for every porting blocker in the file (one per rewritten statement); MC401's
    left out without ``relative_imports``."""
    statement_of = _import_statements(source)
    iterated = _iterated_calls(source.module)
    decisions: list[Decision] = []
    by_statement: dict[int, tuple[cst.Import | cst.ImportFrom, list[tuple[cst.CSTNode, porting.PortFacts]]]] = {}
    for node, facts in porting.extract(source):
        if facts.kind == porting.RELATIVE_IMPORT and not relative_imports:
            continue
        line = source.location(node).line
        if facts.kind in (porting.RELATIVE_IMPORT, porting.REMOVED_API):
            statement = statement_of.get(id(node))
            if statement is not None:
                by_statement.setdefault(id(statement), (statement, []))[1].append((node, facts))
            continue
        decision = _expression(node, facts, line, id(node) in iterated)
        if decision is not None:
            decisions.append(decision)
    for statement, items in by_statement.values():
        decisions.extend(_import(source, statement, items))
    decisions.sort(key=lambda d: (d.line, d.code))
    return decisions


def _import_statements(source: SourceFile) -> dict[int, cst.Import | cst.ImportFrom]:
    """id of each import statement, and of each of its names, → the statement."""
    statement_of: dict[int, cst.Import | cst.ImportFrom] = {}
    for node, _line, _ in porting.import_statements(source.module):
        statement_of[id(node)] = node
        if isinstance(node, cst.Import) or not isinstance(node.names, cst.ImportStar):
            for alias in node.names:
                statement_of[id(alias)] = node
    return statement_of


def _expression(node: cst.CSTNode, facts: porting.PortFacts, line: int, iterated: bool) -> Decision | None:
    """The decision for a blocker inside an expression: a division, a Python 2 name, a dict method."""
    code = _CODE_OF[facts.kind]
    if not facts.fixable:
        return Decline(code, line, _why_not(facts))
    if facts.kind == porting.DIVISION:
        return _division(node, facts, line)
    if facts.kind == porting.PY2_NAME:
        replacement = porting.PY2_BUILTINS[facts.what] or facts.what
        return _replace(code, line, node, cst.parse_expression(replacement), f"{facts.what} -> {replacement}")
    if facts.kind == porting.DICT_METHOD:
        return _dict_method(node, line, iterated)
    return None


def _why_not(facts: porting.PortFacts) -> str:
    if facts.kind == porting.DIVISION:
        return "the file has `from __future__ import division`: `/` was already true division, so `//` " \
               "would change its other uses; write `//` or int(...) by hand"
    if facts.kind == porting.PY2_NAME:
        return "basestring outside isinstance()/issubclass(): choose str (text) or bytes (data) by hand"
    if facts.elsewhere:
        return (f"a top-level module of that name exists too ({facts.elsewhere}), which Python 3 imports and "
                f"the code may mean: write `from . import` by hand if the sibling {facts.detail} is meant")
    return facts.detail


def _edit(code: str, line: int, summary: str, node: cst.CSTNode, rewrite) -> Edit:
    return Edit(code, line, summary, Applicability.SAFE, Exactness.BY_CONSTRUCTION,
                reason="restores what the code meant under Python 2 and the PyTorch it was written for",
                rewrites=((id(node), rewrite),), anchors=(node,))


def _replace(code: str, line: int, node: cst.CSTNode, new: cst.BaseExpression, summary: str) -> Edit:
    return _edit(code, line, summary, node, lambda _old: new)


def _division(node: cst.CSTNode, facts: porting.PortFacts, line: int) -> Edit:
    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        if isinstance(updated, cst.AugAssign):
            op = updated.operator
            return updated.with_changes(operator=cst.FloorDivideAssign(
                whitespace_before=op.whitespace_before, whitespace_after=op.whitespace_after))
        assert isinstance(updated, cst.BinaryOperation)
        op = updated.operator
        return updated.with_changes(operator=cst.FloorDivide(
            whitespace_before=op.whitespace_before, whitespace_after=op.whitespace_after))

    return _edit("MC402", line, f"{facts.what}: / -> //", node, rewrite)


_ITERATING = frozenset({"list", "tuple", "sorted", "dict", "set", "frozenset", "enumerate", "zip", "any", "all",
                        "sum", "min", "max", "map", "filter", "reversed", "OrderedDict", "iter", "len"})


def _iterated_calls(module: cst.Module) -> set[int]:
    """ids of expressions that are only iterated over: a for loop's or comprehension's iterable,
    an argument of list(), sorted(), dict(), ... A view works there exactly like the iterator."""
    found: set[int] = set()

    class _Visitor(cst.CSTVisitor):
        def visit_For(self, node: cst.For) -> None:
            found.add(id(node.iter))

        def visit_CompFor(self, node: cst.CompFor) -> None:
            found.add(id(node.iter))

        def visit_Call(self, node: cst.Call) -> None:
            name = dotted_name(node.func) or ""
            if name.rsplit(".", 1)[-1] in _ITERATING and name.rsplit(".", 1)[-1] != "reversed":
                for arg in node.args:
                    if arg.keyword is None and not arg.star:
                        found.add(id(arg.value))

    walk(module, _Visitor())
    return found


def _dict_method(call: cst.CSTNode, line: int, iterated: bool) -> Edit:
    assert isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute)
    old = call.func.attr.value
    new = porting.DICT_METHODS[old]

    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.Call) and isinstance(updated.func, cst.Attribute)
        renamed = updated.with_changes(func=updated.func.with_changes(attr=cst.Name(new)))
        if iterated:
            return renamed
        inner = renamed.with_changes(lpar=(), rpar=())
        return cst.Call(cst.Name("iter"), [cst.Arg(inner)], lpar=updated.lpar, rpar=updated.rpar)

    summary = f".{old}() -> .{new}()" if iterated else f".{old}() -> iter(.{new}())"
    return _edit("MC405", line, summary, call, rewrite)


def _import(source: SourceFile, statement: cst.Import | cst.ImportFrom,
            items: list[tuple[cst.CSTNode, porting.PortFacts]]) -> list[Decision]:
    """One edit for an import statement with MC401/MC404 findings (declines for what stays)."""
    location = source.location(statement)
    line = location.line
    decisions: list[Decision] = [Decline(_CODE_OF[facts.kind], line, _why_not(facts))
                                 for _, facts in items if not facts.fixable]
    fixable = {id(node): facts for node, facts in items if facts.fixable}
    if not fixable:
        return decisions
    codes = sorted({_CODE_OF[facts.kind] for facts in fixable.values()})
    first_kind = next(facts.kind for _, facts in items if facts.fixable)
    if isinstance(statement, cst.ImportFrom) and first_kind == porting.RELATIVE_IMPORT:
        decisions.append(_relative_from(statement, line))
    elif location.end_line not in (None, line):
        decisions.extend(Decline(code, line, "the import spans several lines; rewrite it by hand (the fix keeps "
                                             "every statement on its line)") for code in codes)
    else:
        if isinstance(statement, cst.Import):
            parts, summary = _import_parts(statement, fixable)
        else:
            parts, summary = _from_parts(statement, fixable)
        decisions.append(_statement_edit(codes, line, summary, statement, parts))
    return decisions


def _relative_from(statement: cst.ImportFrom, line: int) -> Edit:
    """MC401 ``from config import a`` → ``from .config import a``."""
    def relative(updated: cst.CSTNode) -> cst.CSTNode:
        assert isinstance(updated, cst.ImportFrom)
        return updated.with_changes(relative=[cst.Dot()])

    module = dotted_name(statement.module) if statement.module else ""
    return _edit("MC401", line, f"from {module} import -> from .{module} import", statement, relative)


def _alias_code(alias: cst.ImportAlias) -> str:
    return code_of(alias.with_changes(comma=cst.MaybeSentinel.DEFAULT)).strip()


def _import_parts(statement: cst.Import, fixable: dict[int, porting.PortFacts]) -> tuple[list[str], str]:
    """MC401 ``import os, config`` → ``import os; from . import config``, names kept in order: the
    statements and the summary."""
    parts: list[str] = []
    plain: list[str] = []
    for alias in statement.names:
        if id(alias) in fixable:
            if plain:
                parts.append("import " + ", ".join(plain))
                plain = []
            parts.append(f"from . import {_alias_code(alias)}")
        else:
            plain.append(_alias_code(alias))
    if plain:
        parts.append("import " + ", ".join(plain))
    return parts, "import -> " + "; ".join(p for p in parts if p.startswith("from ."))


def _from_parts(statement: cst.ImportFrom, fixable: dict[int, porting.PortFacts]) -> tuple[list[str], str]:
    """MC404 ``from torch._six import inf, string_classes`` → each removed name's replacement, the
    rest still imported from the module: the statements and the summary."""
    module = dotted_name(statement.module) if statement.module else ""
    parts, kept = [], []
    assert not isinstance(statement.names, cst.ImportStar)
    for alias in statement.names:
        name = dotted_name(alias.name) or ""
        as_name = name
        if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
            as_name = alias.asname.name.value
        entry = porting.removed_entry(module, name)
        if id(alias) in fixable and entry is not None and entry.replacement:
            as_clause = f" as {as_name}" if as_name != name else ""
            parts.append(entry.replacement.format(as_name=as_name, as_clause=as_clause))
        else:
            kept.append(_alias_code(alias))
    if kept:
        parts.append(f"from {module} import {', '.join(kept)}")
    return parts, f"from {module} import ... -> " + "; ".join(parts)


def _statement_edit(codes: list[str], line: int, summary: str, statement: cst.Import | cst.ImportFrom,
                    parts: list[str]) -> Edit:
    """The statement replaced by ``parts`` on its own line; a ``;`` after it stays."""
    new_line = cst.parse_statement("; ".join(parts) + "\n")
    assert isinstance(new_line, cst.SimpleStatementLine)
    replacement = list(new_line.body)
    replacement[-1] = replacement[-1].with_changes(semicolon=cst.MaybeSentinel.DEFAULT)

    def rewrite(updated: cst.CSTNode) -> cst.CSTNode:
        last = replacement[-1]
        semicolon = getattr(updated, "semicolon", cst.MaybeSentinel.DEFAULT)
        return cst.FlattenSentinel([*replacement[:-1], last.with_changes(semicolon=semicolon)])

    edit = _edit(codes[0], line, summary, statement, rewrite)
    if len(codes) > 1:
        edit = dataclasses.replace(edit, also=tuple(codes[1:]))
    return edit


# ----- in-memory porting for the build step -------------------------------------------------

_IMPORT_MATCH = re.compile(r"[;:]?[ \t\f]*(?:from|import)[ \t]")


def _may_need_porting(text: str, path: str, relative: bool) -> bool:
    """A cheap screen: can the file hold a safe porting fix at all? The rule's own pre-screen
    (``porting.TRIGGER``, a superset of what :func:`porting.extract` finds), where an import
    counts only if an implicit relative import can be (``relative``, and the folder a package)."""
    siblings: frozenset[str] | None = None
    for match in porting.TRIGGER.finditer(text):
        if not _IMPORT_MATCH.match(match.group()):
            return True
        if not relative:
            continue
        if siblings is None:
            siblings = porting.sibling_modules(path) or frozenset()
        if siblings:
            return True
    return False


def port_source(text: str, path: str, *, package: str | None = None) -> tuple[str, list[tuple[str, int, str]]]:
    """``text`` with every safe MC4xx fix applied, and (code, line, what) for each fix.

    Line-preserving: the result has the same number of lines, each statement where it was. The
    text comes back unchanged (with no fixes) when there is nothing to port, when it does not
    parse (Python 2 print statements), or if anything goes wrong. Imports no torch.

    ``package`` is the package the module is imported into (``spec.parent``), when known: ""
    for a module imported as a top-level module (``import resnet`` with its folder on
    ``sys.path``), where ``from . import config`` fails ("no known parent package") and the
    implicit sibling import works as written, so MC401 edits are left out. None (files on
    disk, as ``--fix`` writes them): the folder decides.
    """
    try:
        relative = package != ""
        if not _may_need_porting(text, path, relative):
            return text, []
        source = SourceFile.parse(path, text)
        edits = [d for d in _decisions(source, relative) if isinstance(d, Edit)
                 and d.applicability is Applicability.SAFE]
        if not edits:
            return text, []
        fixed = apply_edits(source, edits)
        if fixed.count("\n") != text.count("\n"):
            return text, []
        return fixed, [(edit.code, edit.line, edit.summary) for edit in edits]
    except Exception:  # never let an odd file break an import
        return text, []
