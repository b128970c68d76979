"""The static pass: files in, findings out. Reads source only; never imports torch."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import sys
import threading
import warnings
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from types import ModuleType
from typing import Any

from modelcheck import SKIP_DIRS
from modelcheck.config import Config
from modelcheck.findings import Finding, Location, Severity
from modelcheck.rules import FAMILIES, SYNTAX_ERROR
from modelcheck.rules.base import Match, Rule, matches_for
from modelcheck.static.fast import AstSource, Unsupported
from modelcheck.static.fast_rules import EXTRACTORS
from modelcheck.static.source import SourceFile, cst, source_lines
from modelcheck.targets import Target

_NOQA = re.compile(
    r"#\s*(?:noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:[\s,]+[A-Z]+[0-9]+)*))?"
    r"|modelcheck:\s*ignore(?:\[(?P<mc_codes>[^\]]*)\])?)",
    re.IGNORECASE,
)


#: PEP 263's encoding declaration on line 1 or 2
CODING = re.compile(rb"(?:[^\n]*\n)?[ \t\f]*#[^\n]*?coding[:=][ \t]*([-\w.]+)")


class PathError(OSError):
    """A path given on the command line that cannot be read."""


@dataclass
class StaticResult:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0
    sources: dict[str, str] = field(default_factory=dict)  # path → text, for reports and fixes


def discover(paths: Iterable[Path], config: Config) -> tuple[list[Path], list[str]]:
    """The Python files under ``paths`` (folders recursively), minus excluded ones.

    A path named explicitly is checked even if it is excluded by a folder pattern, like ruff
    without --force-exclude; with ``config.force_exclude`` (``--force-exclude``, as pre-commit
    hooks pass, since pre-commit names every staged file) exclusions apply to it too. A missing
    path raises PathError.

    Symbolic links: a folder's symlinks to folders are followed, but never into a folder already
    reached (a link to ``.`` or to a parent, or a second way to the same folder), and folders are
    walked breadth first, so each real file is checked once, under its shortest path. A file
    reached several ways (a symlinked file, a file named twice or also inside a named folder) is
    checked once: as named on the command line if it was, else under its shortest path.
    """
    entries: list[tuple[Path, bool]] = []  # (path, named on the command line)
    notes: list[str] = []
    for path in paths:
        if not path.exists():
            raise PathError(f"{path}: no such file or directory")
        if config.force_exclude and config.excluded(path):
            continue
        if path.is_dir():
            found = sorted(_walk(path, config))
            if not found:
                notes.append(f"{path}: no Python files to check")
            entries.extend((file, False) for file in found)
        else:
            entries.append((path, True))
    chosen: dict[Path, int] = {}  # real file -> the entry that checks it
    for index, (file, named) in enumerate(entries):
        key = _real(file)
        best = chosen.get(key)
        if best is None or (not entries[best][1] and (named or _path_rank(file) < _path_rank(entries[best][0]))):
            chosen[key] = index
    keep = set(chosen.values())
    return [file for index, (file, _) in enumerate(entries) if index in keep], notes


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _path_rank(path: Path) -> tuple[int, str]:
    return len(path.parts), str(path)


def _walk(folder: Path, config: Config) -> Iterator[Path]:
    """The Python files under ``folder``, breadth first; each folder entered once (see discover)."""
    entered = {_real(folder)}
    queue = deque([folder])
    while queue:
        current = queue.popleft()
        try:
            children = sorted(current.iterdir())
        except OSError:  # unreadable, or gone meanwhile
            continue
        for child in children:
            if config.excluded(child):
                continue
            if child.is_dir():
                if child.name in SKIP_DIRS or child.name.endswith(".egg-info"):
                    continue
                real = _real(child)
                if real not in entered:  # else a cycle (a_self -> .) or a second way in
                    entered.add(real)
                    queue.append(child)
            elif child.suffix in (".py", ".pyi") and child.is_file():
                yield child


def read_source(path: Path) -> tuple[str | None, str | None]:
    """(text, None) or (None, why it was skipped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"{path}: skipped, cannot read ({exc.strerror or exc})"
    if b"\x00" in data:
        return None, f"{path}: skipped, binary file"
    cookie = CODING.match(data)  # PEP 263: "# -*- coding: latin-1 -*-" on line 1 or 2
    encoding = cookie.group(1).decode("ascii") if cookie else "utf-8-sig"
    try:
        return data.decode(encoding), None
    except LookupError:
        return None, f"{path}: skipped, unknown encoding {encoding!r}"
    except UnicodeDecodeError as exc:
        return None, f"{path}: skipped, not {'UTF-8' if encoding == 'utf-8-sig' else encoding} (byte {exc.start})"


def check_source(path: str, text: str, target: Target, config: Config) -> list[Finding]:
    """Findings for one file's text. A syntax error is itself a finding (MC000).

    Only the statements that can hold a finding get parsed into a tree (``reduce_source``): the
    rest of the file is checked by the stdlib compiler for syntax errors only. The families
    ``static.fast_rules`` has a port of read an ``ast`` tree, the others (and any file the ast
    path declines) a libcst one: libcst is imported only then.
    """
    with _gc_paused():
        return _check_source(path, text, target, config)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is checked: its trees are up to millions of
    objects without cycles, and the collector's passes over them cost as much as building them
    (a 60,000-call module: 6.1 s of CPU with it, 3.3 s without). Cycles made meanwhile (a closure
    or two) are collected once it is back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_source(path: str, text: str, target: Target, config: Config) -> list[Finding]:
    error = _syntax_error(path, text)
    if error is not None:
        return [error]
    families, code, line_map = reduce_source(text, FAMILIES)
    if not families:
        return []
    located: dict[str, list[Located]] = {}
    if any(family.name in EXTRACTORS for family in families):
        with contextlib.suppress(Unsupported, RecursionError):  # else libcst checks them all
            located = _ast_findings(AstSource.parse(path, text, code, line_map), families, target)
    rest = [family for family in families if family.name not in located]
    if rest:
        if located:  # libcst parses only what the remaining families need
            rest, code, line_map = reduce_source(text, rest)
        done = _cst_findings(path, text, code, line_map, rest, target)
        if isinstance(done, Finding):
            return [done]
        located.update(done)
    lines = source_lines(text)
    findings = [
        Finding(code=rule.code, message=match.message, severity=severity, location=location,
                fixable=match.fixable, source_line=lines[location.line - 1] if 0 < location.line <= len(lines) else "",
                certain=match.certain, targets=match.targets)
        for family in families for location, hits in located.get(family.name, ())
        for rule, match, severity in hits
    ]
    return [f for f in findings if config.code_enabled(f.code, path) and not suppressed(f, lines)]


Located = tuple[Location, list[tuple[Rule, Match, Severity]]]  # where, and the rules that fire there


def _ast_findings(source: AstSource, families: Sequence[Any], target: Target) -> dict[str, list[Located]]:
    """What the families with an ast port find, by family name."""
    found: dict[str, list[Located]] = {}
    for family in families:
        extract = EXTRACTORS.get(family.name)
        if extract is not None:
            pairs = ((node, list(matches_for(family.rules, facts, target))) for node, facts in extract(source))
            found[family.name] = [(source.location(node), hits) for node, hits in pairs if hits]
    return found


def _cst_findings(path: str, text: str, code: str, line_map: list[int], families: Sequence[Any],
                  target: Target) -> dict[str, list[Located]] | Finding:
    """What ``families`` find on a libcst tree, by family name; the MC000 if libcst cannot parse it."""
    try:
        if "\r" in text.replace("\r\n", ""):  # a lone CR ends a line for Python, not for the pre-screen
            source = SourceFile.parse(path, text)
        else:
            source = _parse(path, text, code, line_map)
    except cst.ParserSyntaxError as exc:
        return _syntax_finding(path, text, exc.raw_line, exc.raw_column + 1, f"libcst cannot parse it: {exc.message}")
    except RecursionError:
        return _syntax_finding(path, text, 1, 1, "too deeply nested to parse")
    found: dict[str, list[tuple[Any, list]]] = {}
    for family in families:
        pairs = ((node, list(matches_for(family.rules, facts, target))) for node, facts in family.extract(source))
        found[family.name] = [(node, hits) for node, hits in pairs if hits]
    source.locate(node for pairs in found.values() for node, _ in pairs)  # every position in one pass
    return {name: [(source.location(node), hits) for node, hits in pairs] for name, pairs in found.items()}


def _parse(path: str, text: str, code: str, line_map: list[int]) -> SourceFile:
    """libcst tree of the reduced code; the whole text if the reduction does not parse."""
    try:
        return SourceFile(path, text, parse_module(code), line_map=line_map)
    except (cst.ParserSyntaxError, RecursionError):
        return SourceFile(path, text, parse_module(text))  # a layout the pre-screen misread: parse it all


# ----- big modules: parsed in pieces ------------------------------------------------------
#
# libcst's native parser holds the whole token stream and two Rust trees while it builds the
# Python one: a generated 60,000-line function peaks at 2.5 GB, and parses slower per line than
# 500-line pieces do. So code of more than CHUNK_LINES lines is parsed in pieces cut between
# statements of the module or of a def/class body (at any depth through defs and classes), each
# piece prefixed with the header lines of the defs and classes it continues and followed by a
# ``pass`` where the next piece's first statement stands (the same dedent context), and the
# pieces' statements are put back in their blocks. A cut is made only where nothing can move to
# another owner: right after a code line, before a statement that only empty lines or comments at
# its own indentation precede, never before a block's first statement. Tests check the tree
# equals a full parse (``deep_equals``) on every fixture cut everywhere possible. If a piece
# does not parse or fit, the code is parsed whole.

CHUNK_LINES = 2000  # code longer than this is parsed in pieces ...
PIECE_LINES = 500  # ... of about this many lines (smaller pieces parse faster: the Rust side's memory)


class _Unsplittable(Exception):
    """The pieces do not fit back together: parse the code whole."""


def parse_module(code: str) -> cst.Module:
    """``libcst.parse_module(code)``; big code in pieces, put together into the same tree."""
    if code.count("\n") <= CHUNK_LINES or "\r" in code.replace("\r\n", ""):  # lone \r: lines the scan misreads
        return cst.parse_module(code)
    lines = code.split("\n")
    masked, inside = _mask(code)
    cuts = _cuts(lines, masked, _items(masked, inside))
    if not cuts:
        return cst.parse_module(code)
    try:
        return _parse_pieces(lines, masked, cuts)
    except (_Unsplittable, cst.ParserSyntaxError, AttributeError, IndexError):
        return cst.parse_module(code)


@dataclass
class _Cut:
    line: int  # the piece starts here (0-based): after the last code line before ``statement``
    statement: int  # the line of the statement that begins the piece
    indent: str  # that statement's indentation, as written
    open: list[_Item]  # the defs and classes it is inside, outermost first


def _cuts(lines: list[str], masked: list[str], items: list[_Item]) -> list[_Cut]:
    """Where to cut: about every PIECE_LINES lines, at safe places (see above)."""
    candidates: list[_Cut] = []

    def visit(children: list[_Item], open_: list[_Item]) -> None:
        for index, item in enumerate(children):
            if index > 0 or not open_:
                cut = _cut_before(item, lines, masked, open_)
                if cut is not None:
                    candidates.append(cut)
            if item.head in ("def", "class") and item.children and item.keyword_line >= 0:
                visit(item.children, [*open_, item])

    visit(items, [])
    first_block = next((item.children[0].start for item in _all_items(items) if item.children), None)
    cuts: list[_Cut] = []
    start = 0
    for cut in sorted(candidates, key=lambda c: c.line):
        if first_block is not None and cut.line <= first_block:
            continue  # the first piece holds the first indented block: the module's default indent
        if cut.line - start >= PIECE_LINES:
            cuts.append(cut)
            start = cut.line
    return cuts


def _cut_before(item: _Item, lines: list[str], masked: list[str], open_: list[_Item]) -> _Cut | None:
    number = item.start
    if number <= 0:
        return None
    line = lines[number]
    indent = line[: len(line) - len(line.lstrip())]
    previous = number - 1
    while previous >= 0 and not masked[previous].strip():
        text = lines[previous].rstrip("\r")
        if text and not (text.startswith(indent) and text[len(indent):].startswith("#")):
            return None  # a comment that may belong to the block above, or a blank line with spaces
        previous -= 1
    if previous < 0 or any(not (o.start <= previous) for o in open_):
        return None
    return _Cut(previous + 1, number, indent, open_)


def _header(item: _Item, lines: list[str], masked: list[str]) -> list[str]:
    """A def's or class's lines up to its body (decorators too), without the comments after."""
    last = item.children[0].start - 1
    while last > item.start and not masked[last].strip():
        last -= 1
    return lines[item.start: last + 1]


def _parse_pieces(lines: list[str], masked: list[str], cuts: list[_Cut]) -> cst.Module:
    bounds = [0, *(cut.line for cut in cuts), len(lines)]
    modules: list[tuple[cst.Module, int]] = []  # each piece and how many blocks it continues
    for index in range(len(bounds) - 1):
        before = cuts[index - 1] if index > 0 else None
        head = [line for item in (before.open if before else []) for line in _header(item, lines, masked)]
        body = lines[bounds[index]: bounds[index + 1]]
        if index < len(cuts):
            body = [*body, cuts[index].indent + "pass", ""]
        modules.append((cst.parse_module("\n".join([*head, *body])), len(before.open) if before else 0))
    return _join(modules, cuts)


def _join(modules: list[tuple[cst.Module, int]], cuts: list[_Cut]) -> cst.Module:
    first, last = modules[0][0], modules[-1][0]
    body: list[Any] = []
    for index, (module, depth) in enumerate(modules):
        if (module.default_indent, module.default_newline) != (first.default_indent, first.default_newline):
            raise _Unsplittable
        statements = list(module.body)
        if index > 0 and not depth and module.header:  # lines before a piece's first statement
            if not statements:
                raise _Unsplittable
            statements[0] = statements[0].with_changes(leading_lines=(*module.header, *statements[0].leading_lines))
        _absorb(body, statements, depth)
        if index < len(cuts):  # drop the ``pass`` standing for the next piece's first statement
            _drop_pass(body, len(cuts[index].open))
    return first.with_changes(body=tuple(_close(node) for node in body), footer=last.footer,
                              has_trailing_newline=last.has_trailing_newline)


class _Open:
    """A def or class whose body comes from several pieces."""

    def __init__(self, node: Any) -> None:
        if not isinstance(node, (cst.FunctionDef, cst.ClassDef)) or not isinstance(node.body, cst.IndentedBlock):
            raise _Unsplittable
        self.node = node
        self.body: list[Any] = list(node.body.body)
        self.footer = node.body.footer


def _absorb(body: list[Any], statements: list[Any], depth: int) -> None:
    if depth:
        if not body or not statements:
            raise _Unsplittable
        target = body[-1] if isinstance(body[-1], _Open) else _Open(body[-1])
        body[-1] = target
        continued = _Open(statements[0])
        if continued.node.name.value != target.node.name.value:
            raise _Unsplittable
        _absorb(target.body, continued.body, depth - 1)
        target.footer = continued.footer
        statements = statements[1:]
    body.extend(statements)


def _drop_pass(body: list[Any], depth: int) -> None:
    for _ in range(depth):
        if not body or not isinstance(body[-1], _Open):
            if not body:
                raise _Unsplittable
            body[-1] = _Open(body[-1])
        body = body[-1].body
    stub = body.pop() if body else None
    if not (isinstance(stub, cst.SimpleStatementLine) and len(stub.body) == 1 and isinstance(stub.body[0], cst.Pass)
            and not stub.leading_lines):
        raise _Unsplittable


def _close(node: Any) -> Any:
    if not isinstance(node, _Open):
        return node
    block = node.node.body.with_changes(body=tuple(_close(child) for child in node.body), footer=node.footer)
    return node.node.with_changes(body=block)


def _syntax_error(path: str, text: str) -> Finding | None:
    """Every file gets a syntax check by the stdlib compiler: exact, and 3x faster than
    ``ast.parse`` because it builds no Python objects. Nothing is executed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning/DeprecationWarning of the user's code
            compile(text, path, "exec", dont_inherit=True, optimize=2)  # no docstrings: less to emit
    except SyntaxError as exc:
        return _syntax_finding(path, text, exc.lineno or 1, exc.offset or 1, exc.msg)
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return _syntax_finding(path, text, 1, 1, str(exc) or type(exc).__name__)
    return None


def _syntax_finding(path: str, text: str, line: int, column: int, message: str) -> Finding:
    lines = source_lines(text)
    first_line = message.strip().splitlines()[0] if message.strip() else "invalid syntax"
    return Finding(
        code=SYNTAX_ERROR,
        message=f"syntax error: {first_line}; the file was not checked",
        severity=Severity.ERROR,
        location=Location(path, line, column),
        source_line=lines[line - 1] if 0 < line <= len(lines) else None,
    )


# ----- pre-screen: which statements can hold a finding ------------------------------------
#
# libcst parses about 20x slower than the stdlib compiler, and on real model code (timm) few
# statements can hold a finding. So each file is read as blocks of logical lines (strings and
# comments masked out), the families' TRIGGER regexes pick the lines that may matter, and the
# code libcst parses keeps, verbatim, only: imports, the functions (or methods) holding a
# trigger, the headers of the classes around them, and whatever module-level name those refer
# to (a def or class it names as a header with a ``pass`` body). A line map takes positions back
# to the file. The rules run on that tree unchanged; if the reduced code does not parse (a
# layout the scan misread), the whole file is parsed. An f-string's fields are code: the triggers
# read f-strings as written. On timm/models 23% of the lines get parsed, by ``ast`` for the
# families ``static.fast_rules`` ports (libcst parses 1%, for porting), and tests check the
# findings equal those of a full parse (timm, fixtures of odd layouts, fuzzing).

#: a string literal (prefix letters stay behind as harmless name characters) or a comment
_STRING_OR_COMMENT = re.compile(
    r'"""(?:\\.|[^\\])*?"""' + r"|'''(?:\\.|[^\\])*?'''"  # triple-quoted: may span lines
    + r'|"(?:\\.|[^"\\\n])*"' + r"|'(?:\\.|[^'\\\n])*'"  # single-quoted
    + r"|#[^\n]*",
    re.DOTALL,
)
_HEAD = re.compile(r"(async\s+def|def|class|import|from|@|if|elif|else|try|except|finally|for|while|with|"
                   r"async|match)\b|@")
_CLAUSES = frozenset({"elif", "else", "except", "finally"})
_COMPOUND = frozenset({"if", "try", "for", "while", "with", "async", "match", *_CLAUSES})
_IDENT = re.compile(r"[A-Za-z_]\w*")
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"()[]{}\n\\"))
_BINDS = re.compile(r"\s*([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*,?\s*(?::[^=]*)?=(?!=)")


@dataclass
class _Item:
    """A statement (decorators, trailing clauses and body included): lines start..end, 0-based."""

    start: int
    end: int
    indent: int
    head: str  # def, class, import, a compound keyword, or "" for a simple statement
    children: list[_Item] = field(default_factory=list)
    nested: bool = False  # a def/class inside a function
    in_function: bool = False
    keyword_line: int = -1  # the def/class line, after any decorators

    def binds(self, lines: list[str]) -> set[str]:
        """Names the statement binds in its scope (``x = ...``, ``def x``, ``class x``), also
        in the blocks of an ``if``/``try``/``for``."""
        if self.head in ("def", "class"):
            match = re.match(r"\s*(?:async\s+)?(?:def|class)\s+(\w+)", lines[self.keyword_line])
            return {match.group(1)} if match else set()
        if self.head in _COMPOUND:
            return {name for child in self.children for name in child.binds(lines)}
        match = _BINDS.match(lines[self.start]) if not self.head else None
        return set(_IDENT.findall(match.group(1))) if match else set()

    def imports(self) -> bool:
        return self.head in ("import", "from") or (
            self.head in _COMPOUND and any(child.imports() for child in self.children)
        )


def _mask(text: str, fstrings: list[tuple[int, int]] | None = None) -> tuple[list[str], set[int]]:
    """The lines with strings replaced by underscores and comments by spaces, and the lines
    that begin inside a multi-line string (never the start of a statement). The spans of the
    f-strings are added to ``fstrings`` if given: their fields are code."""
    inside: set[int] = set()
    line_of = 0
    last = 0

    def blank(match: re.Match[str]) -> str:
        nonlocal line_of, last
        token = match.group()
        line_of += text.count("\n", last, match.start())
        last = match.start()
        if "\n" in token:
            inside.update(range(line_of + 1, line_of + 1 + token.count("\n")))
        fill = " " if token.startswith("#") else "_"
        if fstrings is not None and fill == "_" and "f" in text[max(0, match.start() - 2):match.start()].lower():
            fstrings.append(match.span())
        return "\n".join(fill * len(part) for part in token.split("\n"))

    return _STRING_OR_COMMENT.sub(blank, text).split("\n"), inside


def _scanned(masked: str, text: str, fstrings: list[tuple[int, int]]) -> str:
    """What the triggers read: the masked text with the f-strings as written, since a finding may
    stand in one's fields (``f"{x ** 2}"``). Masking keeps every offset, so lines stay the same."""
    if not fstrings:
        return masked
    pieces, last = [], 0
    for start, end in fstrings:
        pieces += [masked[last:start], text[start:end]]
        last = end
    return "".join([*pieces, masked[last:]])


def _items(lines: list[str], inside: set[int]) -> list[_Item]:
    """The module's statements as a tree of blocks, from indentation and bracket depth."""
    # per line, only its brackets (all as "(" or ")") and continuation backslashes: one C pass
    brackets = "\n".join(lines).encode("utf-8", "surrogatepass").translate(_BRACKETS, _NOT_BRACKETS)
    starts: list[tuple[int, int, str]] = []
    depth = 0
    continued = False
    for number, marks in enumerate(brackets.decode("ascii").split("\n")):
        if depth == 0 and not continued and number not in inside:
            line = lines[number]
            stripped = line.lstrip()
            if stripped:
                head = _HEAD.match(stripped)
                indent = len(line[: len(line) - len(stripped)].expandtabs(8))
                starts.append((number, indent, (head.group(1) or "@") if head else ""))
        if marks:
            depth = max(0, depth + marks.count("(") - marks.count(")"))
            continued = marks.endswith("\\")
        else:
            continued = False
    root = _Item(-1, len(lines) - 1, -1, "module")
    stack = [root]
    for number, indent, head in starts:
        while stack[-1].indent >= indent:
            stack.pop().end = number - 1  # a block ends where a statement not inside it starts
        parent = stack[-1]
        previous = parent.children[-1] if parent.children else None
        if previous is not None and (previous.head == "@" or head in _CLAUSES):
            item = previous  # decorators join their def/class, clauses their if/try
            if previous.head == "@":
                item.head = "def" if head.startswith("async") else head
        else:
            item = _Item(number, number, indent, "def" if head.startswith("async def") else head)
            item.in_function = parent.in_function or parent.head == "def"
            parent.children.append(item)
        if head != "@" and head not in _CLAUSES:
            item.keyword_line = number
        item.nested = item.in_function and item.head in ("def", "class")
        stack.append(item)
    for item in stack:
        item.end = len(lines) - 1
    return root.children


def reduce_source(text: str, families: Sequence[ModuleType]) -> tuple[list[ModuleType], str, list[int]]:
    """The families that may find something in ``text``, the code libcst should parse, and
    the line of ``text`` each line of that code is (1-based).

    A family may find something where its ``TRIGGER`` matches outside strings and comments, or,
    if it sets ``NESTED_DEFS``, where a def or class is nested in a function.
    """
    if not any(family.trigger.search(text) or family.nested_defs for family in families):
        return [], "", []
    fstrings: list[tuple[int, int]] = []
    lines, inside = _mask(text, fstrings)
    items = _items(lines, inside)
    offsets = [0]
    scanned = _scanned("\n".join(lines), text, fstrings)
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    nested = {item.start for item in _all_items(items) if item.nested}
    active: list[ModuleType] = []
    hot: set[int] = set()
    for family in families:
        found = {bisect_right(offsets, m.start()) - 1 for m in family.trigger.finditer(scanned)}
        if family.nested_defs:
            found |= nested
        if found:
            active.append(family)
            hot |= found
    if not active:
        return [], "", []
    hot |= _constant_uses(items, lines, scanned, offsets, hot)
    keep = _keep(items, scanned.split("\n") if fstrings else lines, hot)  # names in f-strings are read too
    original = text.split("\n")
    numbers = sorted(keep)
    code = "\n".join(original[n] if keep[n] is None else keep[n] for n in numbers)
    return active, code + "\n", [n + 1 for n in numbers]


def _constant_uses(items: list[_Item], lines: list[str], scanned: str, offsets: list[int], hot: set[int]) -> set[int]:
    """The lines that name what a hot module-level assignment binds: ``FileFacts.api_of`` reads
    module constants, so ``UP = F.interpolate`` makes ``UP(x, scale_factor=2)`` in any function a
    call of the API."""
    ordered = sorted(hot)
    names: set[str] = set()
    for item in items:
        index = bisect_left(ordered, item.start)
        if item.head not in ("def", "class") and index < len(ordered) and ordered[index] <= item.end:
            names |= item.binds(lines)
    if not names:
        return set()
    uses = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b")
    return {bisect_right(offsets, match.start()) - 1 for match in uses.finditer(scanned)}


def _all_items(items: list[_Item]) -> Iterator[_Item]:
    for item in items:
        yield item
        yield from _all_items(item.children)


def _keep(items: list[_Item], lines: list[str], hot: set[int]) -> dict[int, str | None]:
    """Line number → None (keep as is) or a replacement (a ``pass`` stub) for kept lines: the
    imports and hot statements, then the module-level statements the kept code refers to."""
    kept = _Kept(lines, sorted(hot))
    pending = kept.statements(items)
    kept.referred(pending)
    return kept.keep


@dataclass
class _Kept:
    """The lines ``reduce_source`` keeps, as they are chosen (see ``_keep``)."""

    lines: list[str]
    hot: list[int]  # sorted
    keep: dict[int, str | None] = field(default_factory=dict)

    def statements(self, items: list[_Item]) -> list[_Item]:
        """Keep the imports and the module's statements that hold a hot line (of a class, only its
        header and the statements that hold one); the others are returned, for ``referred``."""
        pending: list[_Item] = []
        for item in items:
            if item.imports():
                self.whole(item)
            elif not self.has_hot(item.start, item.end):
                pending.append(item)
            elif item.head == "class" and item.children and not self.has_hot(item.start, item.children[0].start - 1):
                self.header(item)  # a class keeps its header and only the methods that may matter
                for child in item.children:
                    if self.has_hot(child.start, child.end):
                        self.whole(child)
            else:
                self.whole(item)
        return pending

    def referred(self, pending: list[_Item]) -> None:
        """Keep the module-level statements of ``pending`` that bind a name the kept code refers to
        (constants, classes for their bases, functions), until no more are needed."""
        names = _names(self.lines, self.keep)
        while True:
            added = [item for item in pending if item.binds(self.lines) & names]
            if not added:
                return
            for item in added:
                pending.remove(item)
                before = set(self.keep)
                if item.head in ("def", "class"):
                    self.stub(item)
                else:
                    self.whole(item)
                names |= _names(self.lines, set(self.keep) - before)

    def has_hot(self, first: int, last: int) -> bool:
        index = bisect_left(self.hot, first)
        return index < len(self.hot) and self.hot[index] <= last

    def whole(self, item: _Item) -> None:
        self.keep.update(dict.fromkeys(range(item.start, item.end + 1)))

    def header(self, item: _Item) -> None:
        self.keep.update(dict.fromkeys(range(item.start, item.children[0].start)))

    def stub(self, item: _Item) -> None:
        """The header of a def/class with ``pass`` for a body: its name and bases stay known."""
        if not item.children:
            self.whole(item)
            return
        self.header(item)
        self.keep[item.children[0].start] = " " * item.children[0].indent + "pass"


def _names(lines: list[str], numbers: Iterable[int]) -> set[str]:
    return {name for number in numbers for name in _IDENT.findall(lines[number])}


def suppressed(finding: Finding, lines: list[str]) -> bool:
    """``# noqa``, ``# noqa: MC201``, ``# modelcheck: ignore[MC201]`` on the finding's lines."""
    loc = finding.location
    candidates = {loc.line, loc.end_line or loc.line}
    for number in candidates:
        if not 0 < number <= len(lines):
            continue
        for match in _NOQA.finditer(lines[number - 1]):
            codes = match.group("codes") or match.group("mc_codes")
            if codes is None or not codes.strip():
                return True
            if any(finding.code.startswith(c) for c in re.split(r"[\s,]+", codes.strip()) if c):
                return True
    return False


def check_paths(paths: list[Path], target: Target, config: Config) -> StaticResult:
    """Run the static pass over files and folders; one bad file never stops the others."""
    result = StaticResult()
    files, notes = discover(paths, config)
    result.notes.extend(notes)
    for path, (text, why, findings) in zip(files, _check_files(files, target, config), strict=True):
        if text is None:
            result.notes.append(why or f"{path}: skipped")
            continue
        result.files_checked += 1
        result.sources[str(path)] = text
        result.findings.extend(findings)
    result.findings.sort(key=lambda f: (f.location.path, f.location.line, f.location.column, f.code))
    return result


FileResult = tuple[str | None, str | None, list[Finding]]  # (text, why it was skipped, findings)
_FILES_PER_WORKER = 8


def check_file(path: Path, target: Target, config: Config) -> FileResult:
    """Read and check one file: its text (None if skipped), why it was skipped, its findings."""
    text, why = read_source(path)
    if text is None:
        return None, why, []
    return text, None, check_source(str(path), text, target, config)


def _check_files(files: list[Path], target: Target, config: Config) -> list[FileResult]:
    """``check_file`` for each file, in order. With enough files, a free core and nothing else
    running in this process, in forked workers (Linux only): they inherit the imported modules
    and libcst parses single-threaded, so a fork is cheap and safe; biggest files go first."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = 1
    workers = min(cores, len(files) // _FILES_PER_WORKER, 4)
    serial = workers < 2 or not sys.platform.startswith("linux") or threading.active_count() > 1
    if not serial:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        serial = multiprocessing.current_process().daemon  # a daemon may not start processes
    if serial:
        return [check_file(path, target, config) for path in files]
    sizes = [_size(path) for path in files]
    order = sorted(range(len(files)), key=lambda index: -sizes[index])
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            done = pool.map(check_file, [files[i] for i in order], repeat(target), repeat(config))
            results: dict[int, FileResult] = dict(zip(order, done, strict=True))
    except (OSError, BrokenProcessPool):  # no processes to be had, or a worker was killed
        return [check_file(path, target, config) for path in files]
    return [results[index] for index in range(len(files))]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
