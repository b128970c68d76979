"""MC4xx: Python 3 porting blockers in 2018-era research code.

Code written for Python 2 and PyTorch 0.4 often does not even import on current Python and
PyTorch, so no model can be built and no other check can run. Each rule here is about a
construct that stops the model from building at all, so each is an error at every target:

- MC401 implicit relative imports (``import config`` meaning the sibling ``config.py``);
- MC402 ``/`` (true division in Python 3) whose float result reaches a layer size;
- MC403 Python 2 builtins (``xrange``, ``unicode``, ``long``, ``basestring``);
- MC404 imports of torch/torchvision APIs that were removed (:data:`REMOVED`);
- MC405 Python 2 dict iterator methods (``d.iteritems()``).

The static pass alone sees them (``static = True``): the dynamic pass needs a built model,
which is exactly what these constructs prevent; they have no live facts. MC401 reads the file
system next to the finding's path (is the folder a package, is there a sibling module) and
where a top-level module of that name would come from instead (the standard library, or an
installed module found by ``PathFinder.find_spec``); nothing is imported.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from modelcheck.findings import Severity
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family
from modelcheck.static.source import ReadsVisitor, SourceFile, Visitor, cst, dotted_name, walk
from modelcheck.targets import Target

#: syntax only Python 3 has: a file using it was written for Python 3, where `/` always was true
#: division, so MC402 (a Python 2 floor division gone float) does not apply to it
PY3_ONLY = re.compile(
    r"super\(\s*\)|\)\s*->|\bnonlocal\b|\basync\s+def\b|\bawait\b|\byield\s+from\b|:="
    r"|\bimport\s+typing\b|\bfrom\s+typing\s+import\b|\bprint\([^\n]*\b(?:end|sep|file)\s*="
)

# Where a finding can be: a Python 2 name or dict method, a removed API's module or name, an
# absolute import at the start of a line or after `;` or `:` (MC401 then checks the folder; the
# names no package sibling plausibly has are left out: a package cannot hold torch.py and import
# the real torch too, unless `import os, config` names more), and in files without
# Python-3-only syntax, a division (``/`` or ``/=``, not ``//``).
_NOT_SIBLINGS = (r"(?:torch|torchvision|numpy|typing|typing_extensions|functools|itertools|collections|"
                 r"dataclasses|math|os|sys|re|warnings|abc|enum|copy|timm|scipy|cv2|PIL|six|json|time|argparse|"
                 r"pathlib|__future__)\b")
_IMPORT = rf"[ \t\f]*(?:from[ \t]+(?!{_NOT_SIBLINGS})|import[ \t]+(?!{_NOT_SIBLINGS}(?![^\n;#]*,)))[A-Za-z_]"
_WORDS = re.compile(
    r"xrange|iter(?:items|keys|values)\b|basestring|unicode|long(?<![\w.]long)(?!\w)"
    rf"|_six\b|models\.utils|model_urls|^{_IMPORT}",
    re.MULTILINE,
)
# an import after `;` (`import os; import config`) or `:` (`def f(): import config`): patterns of
# their own, each starting with one literal character, which the regex engine scans for fast
_AFTER = (re.compile(f";{_IMPORT}"), re.compile(f":{_IMPORT}"))
_DIVISION = re.compile(r"/(?<!//)(?!/)")


class _Trigger:
    """The static pre-screen's TRIGGER (``search``/``finditer`` like a compiled regex): the
    words above anywhere, imports after `;` or `:`, divisions only in a file with no
    Python-3-only syntax outside strings. (The pre-screen runs ``finditer`` on code with strings
    masked, so it sees fewer Python 3 markers than ``extract``, which reads the whole text: a
    superset, as it must be.)"""

    pattern = _WORDS.pattern

    def search(self, text: str) -> Any:
        return (_WORDS.search(text) or _AFTER[0].search(text) or _AFTER[1].search(text)
                or (not PY3_ONLY.search(text) and _DIVISION.search(text)))

    def finditer(self, text: str) -> Iterator[Any]:
        yield from _WORDS.finditer(text)
        for pattern in _AFTER:
            yield from pattern.finditer(text)
        if not PY3_ONLY.search(text):
            yield from _DIVISION.finditer(text)


TRIGGER = _Trigger()

RELATIVE_IMPORT, DIVISION, PY2_NAME, REMOVED_API, DICT_METHOD = (
    "relative-import", "division", "py2-name", "removed-api", "dict-method")


@dataclass(frozen=True)
class PortFacts:
    """One porting blocker found in source. ``what`` is the construct as written, ``detail``
    what the message adds (where a division flows, what replaces a removed API)."""

    kind: str
    what: str
    detail: str = ""
    fixable: bool = True
    #: MC401 only: where a top-level module of the same name exists too ("the standard library",
    #: "installed at ..."): Python 3 imports that one, which the code may well mean
    elsewhere: str = ""


class _Blocker(Rule):
    """A porting blocker: an error at every target, since the model does not build at all."""

    kind: str

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR


class ImplicitRelativeImport(_Blocker):
    """## What it does
    Checks for `import X` and `from X import name` inside a package (a folder with
    `__init__.py`) where `X` is a sibling module (`X.py`) or package (`X/__init__.py`), in a
    file with neither `from __future__ import absolute_import` nor Python-3-only syntax
    (`super()`, `-> T`, `nonlocal`, ...: such a file was written for absolute imports).

    ## Why is this bad?
    Python 2 resolved `import config` and `from resnext101 import ResNeXt101` to the sibling
    modules first. Python 3 has absolute imports only: the import raises
    `ModuleNotFoundError`, or worse, silently imports some other top-level `config`. When a
    top-level module of that name exists too (the standard library's `logging`, an installed
    package), Python 3 imports that one, which the code may mean: then it is a warning.

    ## Fix safety
    `--fix` writes `from . import X` and `from .X import name`, on the same line: the module
    Python 2 imported. Safe, and exact by construction, so it applies without a model; with one,
    the check imports the written files without modelcheck's in-memory porting, so a blocker
    left on disk fails it. Left alone, with the reason: `import X.Y` (it binds the name `X`,
    which `from . import` cannot spell on one line), a file that is also run as a script
    (`if __name__ == "__main__":`, where a relative import fails), and a name that a top-level
    module has too.
    """

    code = "MC401"
    name = "implicit-relative-import"
    kind = RELATIVE_IMPORT
    import_time = True  # a module-level import: it fails when the file is imported
    example_package = ("config", "resnext101")
    summary = "import of a sibling module without a dot: Python 3 looks for a top-level module instead"
    bad_example = "import config\nfrom resnext101 import ResNeXt101\n"
    good_example = "from . import config\nfrom .resnext101 import ResNeXt101\n"

    def match(self, facts: PortFacts) -> Match | None:
        if facts.kind != self.kind:
            return None
        if facts.elsewhere:
            return Match(f"`{facts.what}` was an implicit relative import of the sibling module {facts.detail} "
                         f"in Python 2, but a top-level module of that name exists too ({facts.elsewhere}): "
                         "Python 3 imports that one, which the code may mean; not rewritten (write "
                         "`from . import` if the sibling is meant, or rename it)", fixable=False,
                         at_most=Severity.WARNING)
        return Match(f"`{facts.what}` is an implicit relative import of the sibling module {facts.detail}: "
                     "Python 3 imports a top-level module of that name instead (ModuleNotFoundError, or a "
                     "different module)", fixable=facts.fixable)


class TrueDivisionAsSize(_Blocker):
    """## What it does
    Checks for `a / b` (or `/=`) whose value reaches, directly or through plain assignments and
    arithmetic in the same function, an integer argument of an `nn` layer constructor (float
    parameters such as `p`, `eps`, `momentum` and `scale_factor` excluded), `range()`,
    `torch.zeros`/`ones`/`empty`/`rand`/`randn` sizes, `.view()`/`.reshape()`/`.expand()` or a
    subscript. Not flagged inside `int()`, `round()` or `math.floor`/`ceil`, nor when an operand
    is a float literal (a float was meant).

    ## Why is this bad?
    In Python 2, `/` on two ints is floor division; in Python 3 it is true division and gives a
    float: `down_dim = in_dim / 2` makes `128.0`, and `nn.Conv2d(in_dim, down_dim, 1)` then
    raises `TypeError` in current PyTorch ("empty(): argument 'size' must be tuple of ints"),
    as do `range()`, `torch.zeros()`, `.view()` and tensor indices given a float.

    ## Fix safety
    `--fix` writes `//` (and `//=`): Python 2's meaning for int operands. Safe, and exact by
    construction for the code as it ran under Python 2, so it applies without a model. Left
    alone, with the reason: a file with `from __future__ import division`, where `/` already was
    true division under Python 2 and `//` would change its other uses.
    """

    code = "MC402"
    name = "true-division-as-size"
    kind = DIVISION
    summary = "`a / b` reaches a layer size, range() or an index: a float in Python 3, a TypeError in PyTorch"
    bad_example = ("import torch.nn as nn\n\n\ndef head(in_dim):\n    down_dim = in_dim / 2\n"
                   "    return nn.Conv2d(in_dim, down_dim, kernel_size=1)\n")
    good_example = ("import torch.nn as nn\n\n\ndef head(in_dim):\n    down_dim = in_dim // 2\n"
                    "    return nn.Conv2d(in_dim, down_dim, kernel_size=1)\n")

    def match(self, facts: PortFacts) -> Match | None:
        if facts.kind != self.kind:
            return None
        return Match(f"`{facts.what}` is true division in Python 3 (a float) and reaches {facts.detail}, "
                     "which needs an int: TypeError in current PyTorch", fixable=facts.fixable)


#: Python 2 builtin → (its Python 3 spelling, or None when there is no exact one)
PY2_BUILTINS: dict[str, str | None] = {"xrange": "range", "unicode": "str", "long": "int",
                                       "basestring": "(str, bytes)"}


class Python2Builtin(_Blocker):
    """## What it does
    Checks for the Python 2 builtins `xrange`, `unicode`, `long` and `basestring`, unless the
    file binds the name itself (`xrange = range`, `from six.moves import xrange`).

    ## Why is this bad?
    They do not exist in Python 3: the code raises `NameError` when it runs (for `xrange` in a
    layer-building loop, when the model is built).

    ## Fix safety
    `--fix` writes `range`, `str` and `int`, and `(str, bytes)` for `basestring` inside
    `isinstance()`/`issubclass()`. Safe, and exact by construction, so it applies without a
    model. `basestring` elsewhere has no one equivalent: it is reported, not rewritten.
    """

    code = "MC403"
    name = "python2-builtin"
    kind = PY2_NAME
    summary = "xrange, unicode, long or basestring: NameError in Python 3"
    bad_example = "layers = [2 * i for i in xrange(4)]\n"
    good_example = "layers = [2 * i for i in range(4)]\n"

    def match(self, facts: PortFacts) -> Match | None:
        if facts.kind != self.kind:
            return None
        return Match(f"`{facts.what}` does not exist in Python 3 (NameError){facts.detail}", fixable=facts.fixable)


@dataclass(frozen=True)
class Removed:
    """An API that 2018-2020 model code imports and that current torch/torchvision no longer has."""

    module: str  # the module imported from; a trailing ".*" matches every submodule
    name: str  # the name imported, or "" for the module itself
    removed_in: str  # "torch 2.0": the first release without it
    #: the statement that replaces ``from module import name`` exactly, ``{as}`` the local name;
    #: None when there is no exact replacement (reported only)
    replacement: str | None
    hint: str  # what to do instead, for the message


#: measured against the installed torch/torchvision by tests/test_rules_porting.py (slow)
REMOVED: tuple[Removed, ...] = (
    Removed("torchvision.models.utils", "load_state_dict_from_url", "torchvision 0.11",
            "from torch.hub import load_state_dict_from_url{as_clause}",
            "from torch.hub import load_state_dict_from_url"),
    Removed("torchvision.models.utils", "", "torchvision 0.11", None,
            "from torch.hub import load_state_dict_from_url"),
    Removed("torch._six", "container_abcs", "torch 1.8", "import collections.abc as {as_name}",
            "import collections.abc as container_abcs"),
    Removed("torch._six", "int_classes", "torch 1.8", "{as_name} = int", "int_classes = int"),
    Removed("torch._six", "string_classes", "torch 2.0", "{as_name} = (str, bytes)",
            "string_classes = (str, bytes)"),
    Removed("torch._six", "inf", "torch 2.0", "from torch import inf{as_clause}", "from torch import inf"),
    Removed("torch._six", "nan", "torch 2.0", "from torch import nan{as_clause}", "from torch import nan"),
    Removed("torch._six", "", "torch 2.0", None, "use the Python 3 builtins (str, int, collections.abc)"),
    Removed("torchvision.models.*", "model_urls", "torchvision 0.15 (deprecated in 0.13)", None,
            "use the weights enums (ResNet50_Weights.IMAGENET1K_V1.url) or copy the URLs"),
)


def removed_entry(module: str, name: str) -> Removed | None:
    """The REMOVED entry for ``from module import name`` (``name`` "" for ``import module``)."""
    for entry in REMOVED:
        hit = module.startswith(entry.module[:-1]) if entry.module.endswith(".*") else module == entry.module
        if hit and entry.name in (name, ""):
            return entry
    return None


class RemovedApi(_Blocker):
    """## What it does
    Checks for imports of torch and torchvision APIs that current releases removed:
    `torchvision.models.utils` (gone in torchvision 0.11), `torch._six` (`container_abcs` and
    `int_classes` gone in torch 1.8, the module in torch 2.0) and the `model_urls` dicts of
    `torchvision.models` (gone in torchvision 0.15, deprecated in 0.13). Imports guarded by
    `try`/`except ImportError` or a version test are not flagged.

    ## Why is this bad?
    2018-2020 model code imports these helpers, so the module fails to import (`ImportError`)
    and the model cannot be built at all.

    ## Fix safety
    `--fix` writes the exact replacement on the same line where there is one: `from torch.hub
    import load_state_dict_from_url`, `import collections.abc as container_abcs`,
    `string_classes = (str, bytes)`, `int_classes = int`, `from torch import inf`. Safe, and
    exact by construction, so it applies without a model. `model_urls` and whole-module imports
    have no replacement to import: reported, not rewritten.
    """

    code = "MC404"
    name = "removed-api"
    kind = REMOVED_API
    import_time = True  # a module-level import: it fails when the file is imported
    summary = "imports a torch/torchvision API that current releases removed (torch._six, models.utils, model_urls)"
    bad_example = "from torchvision.models.utils import load_state_dict_from_url\n"
    good_example = "from torch.hub import load_state_dict_from_url\n"

    def match(self, facts: PortFacts) -> Match | None:
        if facts.kind != self.kind:
            return None
        return Match(f"`{facts.what}` {facts.detail}", fixable=facts.fixable)


DICT_METHODS = {"iteritems": "items", "iterkeys": "keys", "itervalues": "values"}


class Python2DictMethod(_Blocker):
    """## What it does
    Checks for calls of `iteritems()`, `iterkeys()` and `itervalues()`, unless the file defines
    a method of that name.

    ## Why is this bad?
    Python 3 dicts have no such methods (nor has pandas 2), so the code raises `AttributeError`
    when it runs, e.g. when a model is built from a config dict.

    ## Fix safety
    `--fix` writes `.items()` (and `keys`/`values`) where the call is iterated over (`for`
    loops, comprehensions, `list()`, `dict()`, `sorted()`, ...), else `iter(d.items())`, which
    is exactly the old iterator. Safe, and exact by construction, so it applies without a model.
    """

    code = "MC405"
    name = "python2-dict-method"
    kind = DICT_METHOD
    summary = "d.iteritems()/iterkeys()/itervalues(): AttributeError in Python 3"
    bad_example = "def channels(cfg):\n    return {k: v for k, v in cfg.iteritems()}\n"
    good_example = "def channels(cfg):\n    return {k: v for k, v in cfg.items()}\n"

    def match(self, facts: PortFacts) -> Match | None:
        if facts.kind != self.kind:
            return None
        return Match(f"`{facts.what}` does not exist on Python 3 dicts (AttributeError){facts.detail}",
                     fixable=facts.fixable)


RULES: tuple[Rule, ...] = (ImplicitRelativeImport(), TrueDivisionAsSize(), Python2Builtin(), RemovedApi(),
                           Python2DictMethod())


# ----- extraction ------------------------------------------------------------------------------

def extract(source: SourceFile) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    """Every porting blocker in the file, in source order per kind."""
    found: list[tuple[cst.CSTNode, PortFacts]] = []
    found.extend(_import_facts(source))
    found.extend(_division_facts(source))
    found.extend(_name_facts(source))
    return iter(found)


# --- imports (MC401, MC404) -------------------------------------------------------------------

_GUARD_EXCEPTIONS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
_VERSION_TEST = re.compile(r"version|VERSION|TORCH|PY2|PY3|sys\.version_info")


def _guarded_try(node: cst.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
        for element in types:
            expr = element.value if isinstance(element, cst.Element) else element
            name = dotted_name(expr) or ""
            if name.rsplit(".", 1)[-1] in _GUARD_EXCEPTIONS:
                return True
    return False


#: an import with its statement line (None in a one-line ``def f(): import x``) and whether it is guarded
#: (import statement, its line, guarded by try/except ImportError); a string: libcst loads lazily
ImportAt = "tuple[cst.Import | cst.ImportFrom, cst.SimpleStatementLine | None, bool]"


@functools.cache
def _blocks() -> tuple[type, ...]:
    """Statements whose bodies hold imports too (libcst classes: looked up when first needed)."""
    return (cst.FunctionDef, cst.ClassDef, cst.For, cst.While, cst.With)


def import_statements(module: cst.Module) -> Iterator[ImportAt]:
    """Every import with its statement line and whether it is guarded (in a ``try`` that
    catches ImportError, or under an ``if`` testing a version)."""
    return _imports_in(module.body, False)


def _imports_in(nodes: Sequence[cst.CSTNode], guarded: bool) -> Iterator[ImportAt]:
    """The imports of a statement list, into the compound statements that can hold them."""
    for node in nodes:
        if isinstance(node, cst.SimpleStatementLine):
            yield from _small_imports(node.body, node, guarded)
        elif isinstance(node, cst.Try):
            yield from _try_imports(node, guarded)
        elif isinstance(node, (cst.If, cst.Else)):
            yield from _branch_imports(node, guarded)
        elif isinstance(node, _blocks()):
            body = node.body
            if isinstance(body, cst.IndentedBlock):
                yield from _imports_in(body.body, guarded)
            elif isinstance(body, cst.SimpleStatementSuite):
                yield from _small_imports(body.body, None, guarded)


def _small_imports(smalls: Sequence[cst.BaseSmallStatement], line: cst.SimpleStatementLine | None,
                   guarded: bool) -> Iterator[ImportAt]:
    for small in smalls:
        if isinstance(small, (cst.Import, cst.ImportFrom)):
            yield small, line, guarded


def _try_imports(node: cst.Try, guarded: bool) -> Iterator[ImportAt]:
    """A ``try`` body catching ImportError guards its imports; handlers, else and finally do not."""
    yield from _imports_in(node.body.body, guarded or _guarded_try(node))
    for handler in node.handlers:
        yield from _imports_in(handler.body.body, guarded)
    for part in (node.orelse, node.finalbody):
        if part is not None:
            yield from _imports_in(part.body.body, guarded)


def _branch_imports(node: cst.If | cst.Else, guarded: bool) -> Iterator[ImportAt]:
    """An ``if`` testing a version guards both its branches (``elif`` and ``else`` included)."""
    if isinstance(node, cst.If):
        guarded = guarded or bool(_VERSION_TEST.search(cst.Module([]).code_for_node(node.test)))
    yield from _imports_in(node.body.body, guarded)
    if isinstance(node, cst.If) and node.orelse is not None:
        yield from _imports_in([node.orelse], guarded)


@lru_cache(maxsize=256)
def _siblings_cached(folder: str, _mtime: int) -> frozenset[str] | None:
    try:
        if not os.path.isfile(os.path.join(folder, "__init__.py")):
            return None
        names = set()
        for entry in os.scandir(folder):
            if entry.name.endswith(".py") and entry.name != "__init__.py" and entry.is_file():
                names.add(entry.name[:-3])
            elif entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
                names.add(entry.name)
        return frozenset(names)
    except OSError:
        return None


def sibling_modules(path: str) -> frozenset[str] | None:
    """Module names next to ``path`` (``X.py`` and packages ``X/__init__.py``), or None when
    the file's folder is not a package (no ``__init__.py``): its imports are then absolute."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return None
    return _siblings_cached(folder, mtime)


def has_future(module: cst.Module, feature: str) -> bool:
    for stmt in module.body:
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if (isinstance(small, cst.ImportFrom) and not small.relative and small.module is not None
                    and dotted_name(small.module) == "__future__" and not isinstance(small.names, cst.ImportStar)
                    and any(dotted_name(alias.name) == feature for alias in small.names)):
                return True
    return False


_MAIN_GUARD = re.compile(r"""if\s+__name__\s*==\s*['"]__main__['"]|if\s+['"]__main__['"]\s*==\s*__name__""")


def runs_as_script(source: SourceFile) -> bool:
    """Does the file have an ``if __name__ == "__main__":`` block (it is also run as a script)?"""
    return bool(_MAIN_GUARD.search(source.text))


def top_level_elsewhere(name: str, folder: str) -> str:
    """Where a top-level module ``name`` exists outside ``folder``, as a phrase ("the standard
    library's logging", "torch installed at ..."; "" when nowhere): the
    standard library, or a module :class:`importlib.machinery.PathFinder` finds on ``sys.path``
    without the folder itself and the working directory (the project, not an installed module).
    Python 3 imports that one for ``import name``. Nothing is imported."""
    if name in sys.stdlib_module_names or name in sys.builtin_module_names:
        return f"the standard library's {name}"
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    where = _installed(name, os.path.realpath(folder), cwd, tuple(sys.path))
    return f"{name} installed at {where}" if where else ""


@lru_cache(maxsize=1024)
def _installed(name: str, folder: str, cwd: str, path: tuple[str, ...]) -> str:
    entries = [entry for entry in path
               if entry and isinstance(entry, str) and os.path.realpath(entry) not in (folder, cwd)]
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, entries)
    except (ImportError, ValueError, OSError):
        return ""
    # a plain folder of that name (a namespace package) is no module anyone installed
    if spec is None or spec.loader is None or not spec.origin or spec.origin == "namespace":
        return ""
    location = os.path.realpath(spec.origin)
    where = os.path.dirname(location)
    if spec.submodule_search_locations:
        where = os.path.dirname(where)
    if where == folder:
        return ""
    return location


_WHY_SCRIPT = " (not rewritten: the file is also run as a script, where a relative import fails)"


@dataclass(frozen=True)
class _ImportSite:
    """What MC401 reads about the importing file's folder."""

    #: modules next to the file that an absolute-looking import means in Python 2; empty when the
    #: file's imports are absolute (no package, ``absolute_import``, or Python-3-only syntax)
    siblings: frozenset[str]
    folder: str
    #: the file is also run as a script, where a relative import fails: not rewritten
    script: bool


def _import_site(source: SourceFile) -> _ImportSite:
    folder = os.path.dirname(os.path.abspath(source.path))
    siblings = sibling_modules(source.path)
    # a file with Python-3-only syntax was written for absolute imports (as MC402 reads it)
    if not siblings or has_future(source.module, "absolute_import") or PY3_ONLY.search(source.text):
        return _ImportSite(frozenset(), folder, False)
    # a module importing its own name never meant itself (timm/utils/random.py: `import random`)
    own = os.path.splitext(os.path.basename(source.path))[0]
    return _ImportSite(siblings - {own}, folder, runs_as_script(source))


def _import_facts(source: SourceFile) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    site = _import_site(source)
    for node, _line, guarded in import_statements(source.module):
        if guarded:
            continue
        if isinstance(node, cst.Import):
            for alias in node.names:
                yield from _import_alias_facts(alias, site)
        elif not node.relative and node.module is not None:
            yield from _from_import_facts(node, dotted_name(node.module) or "", site)


def _import_alias_facts(alias: cst.ImportAlias, site: _ImportSite) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    """``import X.Y``: a removed API (MC404), else X a sibling module (MC401)."""
    full = dotted_name(alias.name) or ""
    entry = removed_entry(full, "")
    if entry is not None:
        yield alias, PortFacts(REMOVED_API, f"import {full}", _removed_text(entry, full, ""), False)
        return
    top = full.split(".")[0]
    if top not in site.siblings:
        return
    elsewhere = top_level_elsewhere(top, site.folder)
    if elsewhere:
        yield alias, PortFacts(RELATIVE_IMPORT, f"import {full}", f"{top}.py", False, elsewhere)
        return
    dotted = "." in full
    detail = f"{top}.py" + (" (`import X.Y` is not rewritten: use `from . import X` and "
                            "import X.Y inside X)" if dotted else _WHY_SCRIPT if site.script else "")
    yield alias, PortFacts(RELATIVE_IMPORT, f"import {full}", detail, not dotted and not site.script)


def _from_import_facts(node: cst.ImportFrom, module: str,
                       site: _ImportSite) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    """``from X import a, b``: each removed name (MC404), else X a sibling module (MC401)."""
    if module == "__future__":
        return
    removed = list(_removed_names(node, module))
    if removed:
        yield from removed
        return
    top = module.split(".")[0]
    if top not in site.siblings:
        return
    elsewhere = top_level_elsewhere(top, site.folder)
    if elsewhere:
        yield node, PortFacts(RELATIVE_IMPORT, f"from {module} import ...", f"{top}.py", False, elsewhere)
        return
    yield node, PortFacts(RELATIVE_IMPORT, f"from {module} import ...",
                          f"{top}.py" + (_WHY_SCRIPT if site.script else ""), not site.script)


def _removed_names(node: cst.ImportFrom, module: str) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    if isinstance(node.names, cst.ImportStar):
        return
    for alias in node.names:
        name = dotted_name(alias.name) or ""
        entry = removed_entry(module, name)
        if entry is not None:
            yield alias, PortFacts(REMOVED_API, f"from {module} import {name}",
                                   _removed_text(entry, module, name), entry.replacement is not None)


def _removed_text(entry: Removed, module: str, name: str) -> str:
    what = f"{module}.{name}" if name else module
    return f"imports {what}, removed in {entry.removed_in} (ImportError): {entry.hint}"


# --- divisions (MC402) ------------------------------------------------------------------------

#: positional index of the first float parameter of torch.nn layer constructors (torch 2.x):
#: positional arguments from there on are floats (p, eps, negative_slope, ...), not sizes
FIRST_FLOAT_POSITION: dict[str, int] = {
    "AdaptiveLogSoftmaxWithLoss": 3, "AlphaDropout": 0, "BatchNorm1d": 1, "BatchNorm2d": 1, "BatchNorm3d": 1,
    "CELU": 0, "ConstantPad1d": 1, "ConstantPad2d": 1, "ConstantPad3d": 1, "CosineSimilarity": 1,
    "CrossMapLRN2d": 1, "Dropout": 0, "Dropout1d": 0, "Dropout2d": 0, "Dropout3d": 0, "ELU": 0, "Embedding": 3,
    "EmbeddingBag": 2, "FeatureAlphaDropout": 0, "FractionalMaxPool2d": 2, "FractionalMaxPool3d": 2,
    "GroupNorm": 2, "Hardshrink": 0, "Hardtanh": 0, "InstanceNorm1d": 1, "InstanceNorm2d": 1,
    "InstanceNorm3d": 1, "LPPool1d": 0, "LPPool2d": 0, "LPPool3d": 0, "LayerNorm": 1, "LazyBatchNorm1d": 0,
    "LazyBatchNorm2d": 0, "LazyBatchNorm3d": 0, "LazyInstanceNorm1d": 0, "LazyInstanceNorm2d": 0,
    "LazyInstanceNorm3d": 0, "LeakyReLU": 0, "LocalResponseNorm": 1, "MultiheadAttention": 2, "PReLU": 1,
    "PairwiseDistance": 0, "RMSNorm": 1, "RReLU": 0, "Softplus": 0, "Softshrink": 0, "SyncBatchNorm": 1,
    "Threshold": 0, "Transformer": 5, "TransformerDecoderLayer": 3, "TransformerEncoderLayer": 3,
    "Upsample": 1, "UpsamplingBilinear2d": 1, "UpsamplingNearest2d": 1,
    "RNN": 5, "LSTM": 5, "GRU": 5, "RNNBase": 6,  # *args classes: (input_size, hidden_size, num_layers, bias,
                                                  # batch_first, dropout)
}
#: keyword parameters of torch.nn constructors that take floats (torch 2.x)
FLOAT_KEYWORDS = frozenset({
    "alpha", "beta", "delta", "div_value", "dropout", "eps", "init", "k", "label_smoothing", "lambd",
    "layer_norm_eps", "lower", "margin", "max_norm", "max_val", "max_value", "min_val", "min_value", "momentum",
    "negative_slope", "norm_type", "output_ratio", "p", "scale_factor", "threshold", "upper", "value",
    "weight", "pos_weight",
})
#: torch.nn classes that take tensors or modules, not sizes
_NOT_LAYERS = re.compile(r"Parameter|Buffer|ParameterList|ParameterDict|UninitializedParameter|"
                         r"UninitializedBuffer|Module|ModuleList|ModuleDict|Sequential|Identity|.*Loss")
_CREATION = frozenset({"torch.zeros", "torch.ones", "torch.empty", "torch.rand", "torch.randn", "torch.Tensor",
                       "torch.FloatTensor", "torch.LongTensor"})
_SHAPE_METHODS = frozenset({"view", "reshape", "expand"})
_INT_CASTS = frozenset({"int", "round", "len", "math.floor", "math.ceil", "math.trunc", "numpy.floor",
                        "numpy.ceil", "operator.floordiv"})
_PASS_THROUGH = frozenset({"min", "max", "abs", "sum"})


def _layer(qualname: str | None) -> str | None:
    if not qualname or not qualname.startswith("torch.nn."):
        return None
    name = qualname[len("torch.nn."):]
    if "." in name or not name[:1].isupper() or _NOT_LAYERS.fullmatch(name):
        return None
    return name


def _sink_args(source: SourceFile, call: cst.Call) -> tuple[str, list[cst.BaseExpression]] | None:
    """(what the call is, its arguments that must be ints) for a call that needs int sizes."""
    func = call.func
    qual = source.qualname(func)
    layer = _layer(qual)
    args: list[cst.BaseExpression] = []
    if layer is not None:
        first_float = FIRST_FLOAT_POSITION.get(layer, 1 << 30)
        position = 0
        for arg in call.args:
            if arg.star:
                continue
            if arg.keyword is None:
                if position < first_float:
                    args.append(arg.value)
                position += 1
            elif arg.keyword.value not in FLOAT_KEYWORDS:
                args.append(arg.value)
        return f"nn.{layer}()", args
    if qual in ("range", "xrange") and not source.imports.get(qual):
        return f"{qual}()", [arg.value for arg in call.args if not arg.star]
    if qual in _CREATION:
        return f"{qual}()", [arg.value for arg in call.args
                             if not arg.star and (arg.keyword is None or arg.keyword.value == "size")]
    if qual == "torch.full" and call.args and call.args[0].keyword is None:
        return "torch.full()", [call.args[0].value]
    if isinstance(func, cst.Attribute) and func.attr.value in _SHAPE_METHODS and layer is None:
        if qual and qual.split(".")[0] in ("numpy", "np", "math", "os"):
            return None
        return f".{func.attr.value}()", [arg.value for arg in call.args if not arg.star and arg.keyword is None]
    return None


def _float_literal(expr: cst.CSTNode) -> bool:
    """Does ``expr`` hold a float literal or a float() call (a float was meant)?"""
    found = False

    class _Find(cst.CSTVisitor):
        def visit_Float(self, node: cst.Float) -> bool:
            nonlocal found
            found = True
            return False

        def visit_Call(self, node: cst.Call) -> bool:
            nonlocal found
            if isinstance(node.func, cst.Name) and node.func.value == "float":
                found = True
            return not found

    walk(expr, _Find())
    return found


class _Scope:
    """One function body (or, without names, a module or class body): its assignments and the
    divisions flowing into each name."""

    def __init__(self, source: SourceFile, with_names: bool) -> None:
        self.source = source
        self.with_names = with_names
        self.assigned: dict[str, list[cst.CSTNode]] = {}  # name → values (or AugAssign nodes)
        self._cache: dict[str, frozenset[cst.CSTNode]] = {}
        self._busy: set[str] = set()

    def origins(self, expr: cst.CSTNode | None) -> frozenset[cst.CSTNode]:
        """The divisions whose value ``expr`` may carry (not through int() and the like)."""
        if expr is None:
            return frozenset()
        if isinstance(expr, cst.BinaryOperation):
            return self._binary(expr)
        if isinstance(expr, cst.UnaryOperation):
            return self.origins(expr.expression)
        if isinstance(expr, cst.IfExp):
            return self.origins(expr.body) | self.origins(expr.orelse)
        if isinstance(expr, (cst.Tuple, cst.List)):
            return self._union(element.value for element in expr.elements)
        if isinstance(expr, cst.Call):
            if self.source.qualname(expr.func) in _PASS_THROUGH:
                return self._union(arg.value for arg in expr.args)
            return frozenset()
        if isinstance(expr, (cst.Name, cst.Attribute)) and self.with_names:
            name = dotted_name(expr)
            return self._name(name) if name else frozenset()
        return frozenset()

    def _binary(self, expr: cst.BinaryOperation) -> frozenset[cst.CSTNode]:
        """A ``/`` carries itself and its operands' divisions, none when a float literal in it
        says a float was meant; other operators carry their operands'."""
        inner = self.origins(expr.left) | self.origins(expr.right)
        if not isinstance(expr.operator, cst.Divide):
            return inner
        if _float_literal(expr.left) or _float_literal(expr.right):
            return frozenset()
        return inner | {expr}

    def _union(self, exprs: Iterable[cst.CSTNode]) -> frozenset[cst.CSTNode]:
        out: frozenset[cst.CSTNode] = frozenset()
        for expr in exprs:
            out |= self.origins(expr)
        return out

    def _name(self, name: str) -> frozenset[cst.CSTNode]:
        if name in self._cache:
            return self._cache[name]
        if name in self._busy:
            return frozenset()
        self._busy.add(name)
        out: frozenset[cst.CSTNode] = frozenset()
        for value in self.assigned.get(name, ()):
            if isinstance(value, cst.AugAssign):
                if isinstance(value.operator, cst.DivideAssign) and not _float_literal(value.value):
                    out |= {value}
                out |= self.origins(value.value)
            else:
                out |= self.origins(value)
        self._busy.discard(name)
        self._cache[name] = out
        return out


class _Record:
    """What one scope holds: its assignments, calls and subscripts, and whether it divides."""

    def __init__(self, with_names: bool) -> None:
        self.with_names = with_names
        self.assigned: dict[str, list[cst.CSTNode]] = {}
        self.calls: list[cst.Call] = []
        self.subscripts: list[cst.Subscript] = []
        self.divides = False


class _ScopeCollector(Visitor):
    """One pass over the module: a record per scope (the module, each function, each class
    body; nested defs and classes are scopes of their own). Names are followed in functions
    only: the static pre-screen keeps module and class bodies only in part."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[_Record] = [_Record(False)]
        self._stack: list[_Record] = [self.records[0]]

    def _push(self, with_names: bool) -> None:
        record = _Record(with_names)
        self.records.append(record)
        self._stack.append(record)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._push(True)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._stack.pop()

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        self._push(False)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._stack.pop()

    def visit_Assign(self, node: cst.Assign) -> None:
        for target in node.targets:
            name = dotted_name(target.target)
            if name:
                self._stack[-1].assigned.setdefault(name, []).append(node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        name = dotted_name(node.target)
        if name and node.value is not None:
            self._stack[-1].assigned.setdefault(name, []).append(node.value)

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        name = dotted_name(node.target)
        if name:
            self._stack[-1].assigned.setdefault(name, []).append(node)
        if isinstance(node.operator, cst.DivideAssign):
            self._stack[-1].divides = True

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Divide):
            self._stack[-1].divides = True

    def visit_Call(self, node: cst.Call) -> None:
        self._stack[-1].calls.append(node)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        self._stack[-1].subscripts.append(node)


def _division_facts(source: SourceFile) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    if "/" not in source.text or PY3_ONLY.search(source.text):
        return
    future = has_future(source.module, "division")
    collector = _ScopeCollector()
    walk(source.module, collector)
    for origin, what in _reached_sinks(source, collector.records).items():
        yield origin, _division_fact(origin, what, future)


def _reached_sinks(source: SourceFile, records: list[_Record]) -> dict[cst.CSTNode, str]:
    """Each division that reaches a sink → the first sink it reaches (what needs an int there),
    in the order found."""
    reached: dict[cst.CSTNode, str] = {}
    for record in records:
        if not record.divides:
            continue
        scope = _Scope(source, record.with_names)
        scope.assigned = record.assigned
        for what, arg in _sinks(source, record):
            for origin in scope.origins(arg):
                reached.setdefault(origin, what)
    return reached


def _sinks(source: SourceFile, record: _Record) -> list[tuple[str, cst.BaseExpression]]:
    """(what, argument) for every value of the scope that must be an int: sizes in calls,
    indices and slice bounds."""
    sinks: list[tuple[str, cst.BaseExpression]] = []
    for call in record.calls:
        hit = _sink_args(source, call)
        if hit is not None:
            sinks.extend((hit[0], arg) for arg in hit[1])
    for sub in record.subscripts:
        for element in sub.slice:
            part = element.slice
            if isinstance(part, cst.Index):
                sinks.append(("an index", part.value))
            elif isinstance(part, cst.Slice):
                sinks.extend(("a slice", bound) for bound in (part.lower, part.upper, part.step) if bound is not None)
    return sinks


def _division_fact(origin: cst.CSTNode, what: str, future: bool) -> PortFacts:
    """MC402's fact: the division as written and where it flows; with ``from __future__ import
    division`` not fixable (``//`` would change the file's other divisions)."""
    if isinstance(origin, cst.AugAssign):
        text = f"{cst.Module([]).code_for_node(origin.target)} /= {cst.Module([]).code_for_node(origin.value)}"
    else:
        text = cst.Module([]).code_for_node(origin).strip()
    detail = what
    if future:
        detail += " (the file has `from __future__ import division`, so `//` would change its other uses: " \
                  "not rewritten)"
    return PortFacts(DIVISION, _short(text), detail, not future)


def _short(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- Python 2 names and dict methods (MC403, MC405) -------------------------------------------

@lru_cache(maxsize=1)
def _binding_fields() -> dict[type, str]:
    """Node type → its field that binds names (a function: libcst is imported on first use)."""
    return {
        cst.AssignTarget: "target", cst.AnnAssign: "target", cst.AugAssign: "target", cst.For: "target",
        cst.CompFor: "target", cst.NamedExpr: "target", cst.AsName: "name", cst.Global: "names",
    }


def bound_names(module: cst.Module) -> set[str]:
    """Every name the file binds anywhere: assignments, loop targets, parameters, defs,
    classes, imports (``from six.moves import xrange``), ``except ... as``."""
    bound: set[str] = set()

    class _Visitor(cst.CSTVisitor):
        def visit_Param(self, node: cst.Param) -> None:
            bound.add(node.name.value)

        def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
            bound.add(node.name.value)

        def visit_ClassDef(self, node: cst.ClassDef) -> None:
            bound.add(node.name.value)

        def visit_ImportAlias(self, node: cst.ImportAlias) -> None:
            if node.asname is None:
                bound.add((dotted_name(node.name) or "").split(".")[0])

        def on_visit(self, node: cst.CSTNode) -> bool:
            field = _binding_fields().get(type(node))
            if field is not None:
                target = getattr(node, field)
                for item in target if isinstance(target, (list, tuple)) else [target]:
                    item = getattr(item, "name", item)  # Global's NameItem
                    _collect_names(item, bound)
            return super().on_visit(node)

    walk(module, _Visitor())
    return bound


def _collect_names(node: Any, into: set[str]) -> None:
    if isinstance(node, cst.Name):
        into.add(node.value)
    elif isinstance(node, (cst.Tuple, cst.List)):
        for element in node.elements:
            _collect_names(element.value, into)
    elif isinstance(node, (cst.StarredElement, cst.Element)):
        _collect_names(node.value, into)


_CLASSINFO_CALLS = frozenset({"isinstance", "issubclass"})


def _name_facts(source: SourceFile) -> Iterator[tuple[cst.CSTNode, PortFacts]]:
    text = source.text
    wanted = {name for name in PY2_BUILTINS if name in text}
    methods = {name for name in DICT_METHODS if name in text}
    if not wanted and not methods:
        return
    found: list[tuple[cst.CSTNode, str, PortFacts]] = []  # node, the name it depends on, facts

    class _Reads(ReadsVisitor):
        def __init__(self) -> None:
            super().__init__()
            self.classinfo: list[cst.CSTNode] = []  # second arguments of isinstance/issubclass

        def visit_Call(self, node: cst.Call) -> None:
            if (isinstance(node.func, cst.Name) and node.func.value in _CLASSINFO_CALLS and len(node.args) == 2
                    and node.args[1].keyword is None):
                self.classinfo.append(node.args[1].value)
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in methods and not node.args:
                found.append((node, func.attr.value, PortFacts(
                    DICT_METHOD, f".{func.attr.value}()", f"; use .{DICT_METHODS[func.attr.value]}()")))

        def visit_Name(self, node: cst.Name) -> None:
            if node.value not in wanted:
                return
            replacement = PY2_BUILTINS[node.value]
            fixable = node.value != "basestring" or any(_contains(info, node) for info in self.classinfo)
            if fixable:
                detail = f"; use {replacement}"
            else:
                detail = "; no single Python 3 equivalent outside isinstance() (str for text, bytes for data)"
            found.append((node, node.value, PortFacts(PY2_NAME, node.value, detail, fixable)))

    walk(source.module, _Reads())
    if not found:
        return
    bound = bound_names(source.module)  # a shim (xrange = range) or a class's own iteritems()
    yield from ((node, facts) for node, name, facts in found if name not in bound)


def _contains(expr: cst.CSTNode, node: cst.CSTNode) -> bool:
    """Is ``node`` ``expr`` itself or an element of the (nested) tuple ``expr``?"""
    if expr is node:
        return True
    if isinstance(expr, cst.Tuple):
        return any(_contains(element.value, node) for element in expr.elements)
    return False


def describe(facts: PortFacts) -> str:
    return f"{facts.kind}: {facts.what}"


FAMILY = Family(name="porting", rules=RULES, facts_type=PortFacts, trigger=TRIGGER, extract=extract,
                describe=describe)
