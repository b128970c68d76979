"""Programs to fuzz the static pass and the fixers with, and the properties they must keep.

Shared by ``tests/test_fuzz.py`` (a bounded, derandomized run in CI) and ``benchmarks/fuzz.py``
(a long run with the example database in ``.hypothesis/``).

Generators:

- :func:`mutated_fixtures`: one of the project's own fixtures (model code written to trip the
  rules) with a few random structured mutations: argument values swapped, keyword arguments
  dropped, added or repeated, lambdas wrapped and nested, names renamed (unicode too),
  ``# noqa`` comments, ``__future__`` imports, ``/`` and ``//`` swapped, decorators, statements
  duplicated, removed or inserted, tabs, CRLF, a BOM, form feeds, and a few raw character edits
  that mostly break the syntax. Tree edits use libcst, so most results still parse.
- :func:`programs`: hypothesmith's ``from_grammar()`` (grammatical, may not compile) and
  ``from_node()`` (valid libcst trees) programs, and the mutated fixtures.

Properties (each a function that raises AssertionError with the offending program):

- :func:`check_never_raises` (a): ``check_source`` returns findings for any text; a syntax error
  is one MC000 finding; the pre-screen finds what a full parse finds.
- :func:`check_fixes` (b, c): planning and applying every edit the fixers offer (safe and unsafe;
  with or without the ones that need a model) never raises, the output parses (``compile`` and
  libcst), and a second pass over it changes nothing.
- :func:`check_port_source` (d): ``port_source`` keeps the line count and the parse, and is
  idempotent.
- :func:`check_files` (a, b through the disk): the bytes (BOM, coding cookie, CRLF) as
  ``modelcheck --static-only --fix --unsafe-fixes`` reads and plans them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import libcst as cst
from hypothesis import strategies as st
from modelcheck.config import Config
from modelcheck.findings import Finding
from modelcheck.fix.run import FilePlan, choose, make_plans, plan_file, rebuild
from modelcheck.fixers import FIXABLE_CODES
from modelcheck.fixers.base import FixContext
from modelcheck.fixers.porting import port_source
from modelcheck.rules import FAMILIES, SYNTAX_ERROR
from modelcheck.rules.base import matches_for
from modelcheck.static.run import check_paths, check_source, suppressed
from modelcheck.static.source import SourceFile
from modelcheck.targets import Target, make_target

ROOT = Path(__file__).parent / "fixtures"
FIXTURES: tuple[Path, ...] = tuple(sorted(
    [*ROOT.glob("static/*.py"), *ROOT.glob("porting/**/*.py"), *ROOT.glob("dynamic/*.py"),
     *ROOT.glob("repos/**/*.py"), *ROOT.glob("fixers/*_before.py")]))
TEXTS: dict[Path, str] = {path: path.read_text(encoding="utf-8") for path in FIXTURES}
TARGETS: tuple[Target, ...] = (make_target("caffe2"), make_target("caffe2", 11), make_target("onnx", 9),
                               make_target("onnx"))

# ----- pools the mutations draw from -------------------------------------------------------------

VALUES = (
    "0", "1", "2", "3", "-1", "0.5", "1.5", "2.0", "1e309", "True", "False", "None", "UNKNOWN", "...",
    "'nearest'", "'bilinear'", "'bicubic'", "'linear'", "'trilinear'", "'area'", "\"nearest\"", "b'nearest'",
    "f'{mode}'", "'near' 'est'", "(2, 2)", "[3, 3]", "(2,)", "()", "(1, 2, 3)", "(2, 2.0)", "{2: 2}",
    "x.shape[2:]", "x.size()[-2:]", "(x.size(2) * 2, x.size(3) * 2)", "self.scale", "cfg.MODEL.SCALE",
    "config['scale']", "args.mode", "scale", "scale_factor", "mode", "size", "not True", "-x", "2 ** 3",
    "4 / 2", "4 // 2", "a if b else c", "*args", "**kwargs", "lambda x: x", "lambda: None", "(lambda x: x)",
    "torch.nn.functional.interpolate", "nn.Upsample", "F.max_pool2d", "int(s)", "float('nan')",
    "x[...]", "(yield)", "[i for i in range(2)]", "(z := 2)", "await x",
)
KEYWORDS = ("mode", "align_corners", "ceil_mode", "scale_factor", "size", "recompute_scale_factor",
            "kernel_size", "stride", "padding", "dilation", "count_include_pad", "return_indices",
            "divisor_override", "antialias", "inplace", "dim", "output_size")
NAMES = ("x", "y", "self", "cls", "nn", "F", "torch", "operator", "functools", "partial", "math", "_identity",
         "Lambda", "lambda_", "range", "str", "int", "xrange", "unicode", "long", "basestring", "interpolate",
         "Upsample", "MaxPool2d", "config", "__init__", "forward", "print", "名前", "ñame", "Ωmega", "ｘ",
         "ｓｅｌｆ", "x_", "_", "__", "ℌ", "ﬁle")
DECORATORS = ("staticmethod", "classmethod", "property", "torch.jit.script", "torch.no_grad()",
              "functools.lru_cache(maxsize=None)", "(lambda f: f)", "dataclass", "deco(lambda: 1)",
              "register('name')")
CONTAINERS = ("[{}]", "({},)", "{{'k': {}}}", "{{{}}}", "nn.Sequential(Lambda({}))", "functools.partial({}, 1)",
              "partial({})", "staticmethod({})", "({})", "nn.ModuleList([Lambda({})])", "dict(f={})",
              "{} if flag else None", "getattr(self, 'f', {})", "Lambda({})", "[{}, {}]", "({}).__call__",
              "*[{}]")
FUTURES = ("division", "absolute_import", "print_function", "unicode_literals", "annotations",
           "division, absolute_import", "generator_stop")
NOQA = ("# noqa", "# noqa: MC201", "# noqa:MC101,MC402", "# NOQA", "# modelcheck: ignore",
        "# modelcheck: ignore[MC301]", "# modelcheck: ignore[]", "# noqa: E501", "# type: ignore",
        "# -*- coding: utf-8 -*-", "# expect: MC201 error")
SNIPPETS = (
    "self.up = nn.Upsample(scale_factor=2, mode='bilinear')\n",
    "y = F.interpolate(x, size=x.shape[2:], mode='bilinear', align_corners=False)\n",
    "y = F.upsample(x, scale_factor=2)\n",
    "self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)\n",
    "self.pool = nn.AvgPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)\n",
    "y = F.max_pool2d(x, 2, ceil_mode=True)\n",
    "self.f = lambda x: x\n",
    "self.g = Lambda(lambda x, y=1: x * y)\n",
    "def inner(x):\n    return x\n",
    "class Inner(nn.Module):\n    pass\n",
    "for k, v in d.iteritems():\n    pass\n",
    "n = n / 2\n",
    "n /= 2\n",
    "import config\n",
    "from config import scale\n",
    "import os, config\n",
    "from torch._six import container_abcs, string_classes\n",
    "from torchvision.models.utils import load_state_dict_from_url\n",
    "x = xrange(3)\n",
    "ok = isinstance(s, basestring)\n",
    "print x\n",
    "match x:\n    case _:\n        pass\n",
    "async def f():\n    await g(lambda: 1)\n",
    "x = f'{(lambda: 1)()}'\n",
    "global g\n",
    "x: int = lambda: 0\n",
    "def g(*, a=lambda: 1):\n    return a\n",
    "with a as (b, c):\n    pass\n",
    "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "del x\n",
    "x = 1; y = lambda: 2; z = F.interpolate(x, scale_factor=2)\n",
    "if __name__ == '__main__':\n    main()\n",
    "__all__ = ['lambda']\n",
    "x = [lambda: i for i in range(3)]\n",
    "import torch.nn.functional as F\n",
    "from torch.nn import *\n",
    "from . import config\n",
    "return lambda: 1\n",
    "yield F.interpolate(x, scale_factor=2)\n",
    "type X = int\n",
    "x = '''\nclass Fake(nn.Module):\n    f = lambda x: x\n'''\n",
    "x = (\n1)\n",
    "x = 1 \\\n    + 2\n",
)
RAW = ("(", ")", "[", "]", ":", "\\", "\\\n", "\"", "'''", "#", "\n", " ", "\t", "\f", "\x00", "\r", "\u2028",
       "lambda", "def", "async ", "@", ";", ",", "=", "/", "**", "\ufeff")


# ----- mutations ---------------------------------------------------------------------------------

def _nodes(module: cst.Module, kinds: type | tuple[type, ...], where: Callable[[cst.CSTNode], bool] | None = None
           ) -> list[cst.CSTNode]:
    found: list[cst.CSTNode] = []

    class _Collect(cst.CSTVisitor):
        def on_visit(self, node: cst.CSTNode) -> bool:
            if isinstance(node, kinds) and (where is None or where(node)):
                found.append(node)
            return True

    module.visit(_Collect())
    return found


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)


def _pick(draw, items):
    return items[draw(st.integers(0, len(items) - 1))] if items else None


def _expression(draw, module: cst.Module) -> cst.BaseExpression:
    """A value from the pool, or one already used as an argument in this file."""
    if draw(st.booleans()):
        arg = _pick(draw, _nodes(module, cst.Arg))
        if arg is not None:
            return arg.value
    text = draw(st.sampled_from(VALUES))
    try:
        return cst.parse_expression(text.lstrip("*"))
    except cst.ParserSyntaxError:
        return cst.Name("UNKNOWN")


def m_arg_value(draw, module):
    arg = _pick(draw, _nodes(module, cst.Arg))
    if arg is None:
        return module
    return module.deep_replace(arg, arg.with_changes(value=_expression(draw, module)))


def m_star_arg(draw, module):
    arg = _pick(draw, _nodes(module, cst.Arg, lambda a: not a.star))
    if arg is None:
        return module
    return module.deep_replace(arg, arg.with_changes(star=draw(st.sampled_from(["*", "**"])), keyword=None,
                                                     equal=cst.MaybeSentinel.DEFAULT))


def m_drop_arg(draw, module):
    arg = _pick(draw, _nodes(module, cst.Arg, lambda a: a.keyword is not None or draw(st.booleans())))
    return module if arg is None else module.deep_remove(arg)


def m_add_keyword(draw, module):
    call = _pick(draw, _nodes(module, cst.Call))
    if call is None:
        return module
    keyword = draw(st.sampled_from(KEYWORDS))
    args = list(call.args)
    if args and draw(st.booleans()):  # repeat one that is there: a syntax error
        named = [a for a in args if a.keyword is not None]
        if named:
            keyword = _pick(draw, named).keyword.value
    new = cst.Arg(value=_expression(draw, module), keyword=cst.Name(keyword),
                  equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))
    if args and isinstance(args[-1].comma, cst.MaybeSentinel):
        args[-1] = args[-1].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    args.insert(draw(st.integers(0, len(args))) if draw(st.booleans()) else len(args), new)
    for index in range(len(args) - 1):  # every argument but the last needs its comma
        if isinstance(args[index].comma, cst.MaybeSentinel):
            args[index] = args[index].with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return module.deep_replace(call, call.with_changes(args=args))


def m_keyword_positional(draw, module):
    """``f(x, mode='a')`` ⇄ ``f(x, 'a')``."""
    arg = _pick(draw, _nodes(module, cst.Arg, lambda a: not a.star))
    if arg is None:
        return module
    if arg.keyword is not None:
        new = arg.with_changes(keyword=None, equal=cst.MaybeSentinel.DEFAULT)
    else:
        new = arg.with_changes(keyword=cst.Name(draw(st.sampled_from(KEYWORDS))),
                               equal=cst.AssignEqual(cst.SimpleWhitespace(""), cst.SimpleWhitespace("")))
    return module.deep_replace(arg, new)


def m_wrap_lambda(draw, module):
    node = _pick(draw, _nodes(module, cst.Lambda))
    if node is None:
        return module
    template = draw(st.sampled_from(CONTAINERS))
    try:
        new = cst.parse_expression(template.replace("{}", _code(node)).lstrip("*"))
    except cst.ParserSyntaxError:
        return module
    return module.deep_replace(node, new)


def m_nest_lambda(draw, module):
    node = _pick(draw, _nodes(module, cst.Lambda))
    if node is None:
        return module
    body = _code(node.body)
    template = draw(st.sampled_from(["(lambda: {})()", "lambda y: {}", "(lambda z=1: {})(2)", "[{}][0]",
                                     "(lambda *a, **k: {})()"]))
    try:
        return module.deep_replace(node.body, cst.parse_expression(template.format(body)))
    except cst.ParserSyntaxError:
        return module


def m_add_lambda(draw, module):
    """An argument or an assigned value becomes a lambda (the pickling rules' trigger)."""
    nodes = _nodes(module, (cst.Arg, cst.Assign))
    node = _pick(draw, nodes)
    if node is None:
        return module
    params = draw(st.sampled_from(["", "x", "x, y", "*a", "x=1", "x, *, k", "**k"]))
    value = node.value
    new = cst.parse_expression(f"lambda {params}: {_code(value)}") if params else \
        cst.parse_expression(f"lambda: {_code(value)}")
    return module.deep_replace(value, new)


def m_rename(draw, module):
    names = sorted({n.value for n in _nodes(module, cst.Name)})
    old = _pick(draw, names)
    if old is None:
        return module
    new = draw(st.sampled_from(NAMES)) if draw(st.booleans()) else old + draw(st.sampled_from(["_", "2", "é", "_x"]))

    class _Rename(cst.CSTTransformer):
        def leave_Name(self, original_node, updated_node):
            return updated_node.with_changes(value=new) if updated_node.value == old else updated_node

    return module.visit(_Rename())


def m_noqa(draw, module):
    node = _pick(draw, _nodes(module, cst.TrailingWhitespace))
    if node is None:
        return module
    return module.deep_replace(node, node.with_changes(whitespace=cst.SimpleWhitespace("  "),
                                                       comment=cst.Comment(draw(st.sampled_from(NOQA)))))


def _docstring(module: cst.Module) -> bool:
    first = module.body[0] if module.body else None
    return (isinstance(first, cst.SimpleStatementLine) and isinstance(first.body[0], cst.Expr)
            and isinstance(first.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


def m_future(draw, module):
    statement = cst.parse_statement(f"from __future__ import {draw(st.sampled_from(FUTURES))}\n")
    body = list(module.body)
    at = 1 if _docstring(module) else 0
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(body)))  # anywhere: after other code it is a syntax error
    body.insert(at, statement)
    return module.with_changes(body=body)


def m_division(draw, module):
    ops = {cst.Divide: cst.FloorDivide, cst.FloorDivide: cst.Divide, cst.Multiply: cst.Divide,
           cst.DivideAssign: cst.FloorDivideAssign, cst.FloorDivideAssign: cst.DivideAssign,
           cst.AddAssign: cst.DivideAssign, cst.Add: cst.Divide}
    node = _pick(draw, _nodes(module, (cst.BinaryOperation, cst.AugAssign), lambda n: type(n.operator) in ops))
    if node is None:
        return module
    op = node.operator
    return module.deep_replace(node, node.with_changes(operator=ops[type(op)](
        whitespace_before=op.whitespace_before, whitespace_after=op.whitespace_after)))


def m_decorator(draw, module):
    node = _pick(draw, _nodes(module, (cst.FunctionDef, cst.ClassDef)))
    if node is None:
        return module
    decorator = cst.Decorator(cst.parse_expression(draw(st.sampled_from(DECORATORS))))
    return module.deep_replace(node, node.with_changes(decorators=[decorator, *node.decorators]))


def _bodies(module: cst.Module) -> list[cst.CSTNode]:
    return [module, *_nodes(module, cst.IndentedBlock)]


def m_statement(draw, module):
    """Duplicate, remove or insert a statement (a pool snippet, or one from another fixture)."""
    block = _pick(draw, _bodies(module))
    body = list(block.body)
    action = draw(st.sampled_from(["duplicate", "remove", "insert", "insert", "nest"]))
    at = draw(st.integers(0, max(0, len(body) - 1)))
    if action == "duplicate" and body:
        body.insert(at, body[at])
    elif action == "remove" and body:
        del body[at]
        if not body and block is not module:
            body = [cst.parse_statement("pass\n")]
    elif action == "nest" and body:  # a statement into a function, an if, a class, a try
        wrapper = draw(st.sampled_from(["def _f(x):\n", "if True:\n", "class _C(nn.Module):\n", "try:\n",
                                        "with ctx:\n", "for _ in range(1):\n", "async def _g():\n"]))
        text = wrapper + "    pass\n" + ("except Exception:\n    pass\n" if wrapper == "try:\n" else "")
        outer = cst.parse_statement(text)
        body[at] = outer.with_changes(body=outer.body.with_changes(body=[body[at]]))
    else:
        if draw(st.booleans()):
            text = draw(st.sampled_from(SNIPPETS))
        else:
            other = TEXTS[draw(st.sampled_from(FIXTURES))]
            try:
                statements = list(cst.parse_module(other).body)
            except cst.ParserSyntaxError:
                statements = []
            if not statements:
                return module
            text = _code(_pick(draw, statements))
        try:
            statement = cst.parse_module(text).body
        except cst.ParserSyntaxError:
            return module
        body[at:at] = list(statement)
    if block is module:
        return module.with_changes(body=body)
    return module.deep_replace(block, block.with_changes(body=body))


TREE_MUTATIONS = (m_arg_value, m_arg_value, m_star_arg, m_drop_arg, m_drop_arg, m_add_keyword, m_add_keyword,
                  m_keyword_positional, m_wrap_lambda, m_nest_lambda, m_add_lambda, m_rename, m_noqa, m_future,
                  m_division, m_decorator, m_statement, m_statement)


def t_tabs(draw, text):
    return re.sub(r"(?m)^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), text)


def t_crlf(draw, text):
    if draw(st.booleans()):
        return text.replace("\n", "\r\n")
    lines = text.split("\n")
    at = draw(st.integers(0, len(lines) - 1))
    lines[at] += "\r"
    return "\n".join(lines)


def t_bom(draw, text):
    return "\ufeff" + text


def t_form_feed(draw, text):
    lines = text.split("\n")
    at = draw(st.integers(0, len(lines) - 1))
    lines[at] = draw(st.sampled_from(["\f", "\f\n", " \f"])) + lines[at]
    return "\n".join(lines)


def t_no_final_newline(draw, text):
    return text.rstrip("\n") + draw(st.sampled_from(["", " ", "\\", "\t", "# end"]))


def t_raw(draw, text):
    """A character or a word inserted or removed anywhere: usually a syntax error."""
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at] + draw(st.sampled_from(RAW)) + text[at:]
    return text[:at] + text[at + draw(st.integers(1, 8)):]


TEXT_MUTATIONS = (t_tabs, t_crlf, t_bom, t_form_feed, t_no_final_newline, t_raw)


@st.composite
def mutated_fixtures(draw, max_mutations: int = 5) -> tuple[str, str]:
    """(path, text): a fixture and a few mutations of it. The path is the fixture's own, so the
    porting rules see its package's sibling modules."""
    path = draw(st.sampled_from(FIXTURES))
    text = TEXTS[path]
    count = draw(st.integers(0, max_mutations))
    for _ in range(count):
        if draw(st.integers(0, 4)) == 0:
            text = draw(st.sampled_from(TEXT_MUTATIONS))(draw, text)
            continue
        try:
            module = cst.parse_module(text)
        except (cst.ParserSyntaxError, RecursionError):
            continue  # a raw edit broke it: more tree mutations cannot apply
        mutation = draw(st.sampled_from(TREE_MUTATIONS))
        try:
            text = mutation(draw, module).code
        except (cst.ParserSyntaxError, cst.CSTValidationError, TypeError, ValueError):
            continue  # a combination libcst refuses to build: not a program
    return str(path), text


def hypothesmith_programs() -> st.SearchStrategy[tuple[str, str]]:
    import hypothesmith

    return st.one_of(hypothesmith.from_grammar(), hypothesmith.from_node()).map(
        lambda text: (str(ROOT / "fuzz_program.py"), text))


def programs() -> st.SearchStrategy[tuple[str, str]]:
    """Mutated fixtures mostly (model code the rules fire on), hypothesmith programs otherwise."""
    return st.one_of(mutated_fixtures(), mutated_fixtures(), hypothesmith_programs())


# ----- properties --------------------------------------------------------------------------------

def compiles(text: str, path: str = "<fuzz>") -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _full_parse(path: str, text: str, target: Target) -> set[tuple]:
    """What the rules find on a full libcst parse (no pre-screen), less ``# noqa``: the reference."""
    source = SourceFile.parse(path, text)
    out = set()
    for family in FAMILIES:
        for node, facts in family.extract(source):
            for rule, match, severity in matches_for(family.rules, facts, target):
                location = source.location(node)
                finding = Finding(code=rule.code, message=match.message, severity=severity, location=location)
                if not suppressed(finding, source.lines):
                    out.add(_key(finding))
    return out


def _key(finding: Finding) -> tuple:
    location = finding.location
    return (finding.code, location.line, location.column, location.end_line, location.end_column,
            finding.severity.value, finding.message)


def check_never_raises(path: str, text: str, target: Target) -> list[Finding]:
    """(a): findings for any text, one MC000 for a syntax error; the pre-screen finds what a
    full parse finds."""
    findings = check_source(path, text, target, Config())
    assert isinstance(findings, list)
    if not compiles(text, path):
        assert [f.code for f in findings] == [SYNTAX_ERROR], findings
    elif not any(f.code == SYNTAX_ERROR for f in findings):
        got = {_key(f) for f in findings}
        try:
            full = _full_parse(path, text, target)
        except cst.ParserSyntaxError:
            return findings  # valid Python libcst cannot read (a form feed in an indent)
        assert got == full, f"pre-screen vs full parse: missed {sorted(full - got)}, extra {sorted(got - full)}"
    return findings


def fix_once(path: str, text: str, target: Target, *, verifiable: bool) -> str:
    """Plan and apply every edit the flags allow (``--unsafe-fixes``; with ``verifiable`` also the
    ones that need a model), as ``make_plans`` does, without the disk; the fixed text."""
    findings = check_source(path, text, target, Config())
    if any(f.code == SYNTAX_ERROR for f in findings) or not any(f.code in FIXABLE_CODES for f in findings):
        return text
    try:
        source = SourceFile.parse(path, text)
    except cst.ParserSyntaxError:  # valid Python libcst cannot read (a form feed): make_plans skips it
        return text
    decisions = plan_file(source, findings, FixContext(target.name, target.opset))
    chosen, held = choose(decisions, unsafe=True, verifiable=verifiable)
    plan = FilePlan(path, b"", text, findings=findings, source=source, decisions=decisions, chosen=chosen, held=held)
    rebuild(plan)
    assert not plan.error, f"a fixer produced code that does not parse: {plan.error}"
    return plan.fixed


def check_fixes(path: str, text: str, target: Target, *, verifiable: bool) -> str:
    """(b) and (c): every fix applies and parses, and a second pass changes nothing."""
    fixed = fix_once(path, text, target, verifiable=verifiable)
    if fixed == text:
        return fixed
    assert compiles(fixed, path), f"fixed output does not compile:\n{fixed}"
    cst.parse_module(fixed)
    again = fix_once(path, fixed, target, verifiable=verifiable)
    assert again == fixed, "a second fix pass changed the fixed output:\n" + _diff(fixed, again)
    return fixed


def _diff(before: str, after: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "first", "second"))


def check_port_source(path: str, text: str) -> None:
    """(d): same line count; parses when the input did; a second port changes nothing."""
    ported, done = port_source(text, path)
    assert isinstance(ported, str) and isinstance(done, list)
    assert ported.count("\n") == text.count("\n")
    if compiles(text, path):
        assert compiles(ported, path), f"port_source output does not compile:\n{ported}"
        cst.parse_module(ported)
        again, _ = port_source(ported, path)
        assert again == ported, "a second port changed the output:\n" + _diff(ported, again)


ENCODINGS = ("utf-8", "utf-8-sig", "cookie-utf-8", "bom-cookie-utf-8", "cookie-latin-1")


def encode(text: str, how: str) -> bytes:
    """The bytes of a file holding ``text``: plain UTF-8, with a BOM, with a coding cookie."""
    text = text.lstrip("\ufeff")
    if how.startswith("cookie") or how.startswith("bom-cookie"):
        encoding = how.split("cookie-", 1)[1]
        text = f"# -*- coding: {encoding} -*-\n" + text
        data = text.encode(encoding, errors="replace")
        return (b"\xef\xbb\xbf" + data) if how.startswith("bom") else data
    return text.encode(how, errors="surrogatepass")


def check_files(folder: Path, name: str, text: str, how: str, target: Target) -> None:
    """(a) and (b) through the disk: ``check_paths`` then ``make_plans`` as ``--fix`` runs them."""
    path = folder / name
    path.write_bytes(encode(text, how))
    result = check_paths([path], target, Config())
    plans = make_plans(result.sources, result.findings, FixContext(target.name, target.opset),
                       unsafe=True, verifiable=True)
    for plan in plans:
        # a syntax error, or valid Python libcst cannot read (a form feed in an indent): not touched
        assert not plan.error or "syntax error" in plan.error or "cannot be parsed" in plan.error, plan.error
        if plan.changed:
            assert compiles(plan.fixed), f"fixed output does not compile:\n{plan.fixed}"
