"""Constructor arguments from a repository's own call sites: ``net = BASNet(3, 1)`` in basnet_test.py.

Research repositories build their models in their own scripts (test, demo, train) with
arguments nobody wrote down anywhere else: ``BASNet(3, 1)``, ``Vgg(RCL_Module)``, ``Net(cfg)``.
This module finds those calls **statically** (``ast`` only: nothing in the repository is
imported or executed, so it is safe in the parent and in any child) and says which arguments
the audit can reuse.

* Every parseable ``.py`` file under the root is read; a file that does not parse (Python 2
  ``print`` statements) is skipped silently.
* A call's callee is resolved through the script's imports to the file and top-level name that
  defines it: ``from model import BASNet``, ``import model`` + ``model.BASNet``, ``from models.net
  import *``, re-exports through a package ``__init__``, relative imports, and names defined in
  the script itself. Method chains on the result (``Net(cfg).cuda()``) and ``DataParallel(...)``
  wrappers are seen through when looking for the instance's forward call.
* An argument is kept when it is a literal (``ast.literal_eval``; tuples become lists) or a name
  that resolves to something defined at the top level of a repository module: a literal
  assignment there is inlined (``N_CLASSES = 1``), anything else becomes
  ``{"$ref": "/abs/path/module.py:Name"}`` (resolved by :func:`modelcheck.models.specs.resolve_args` in
  the child that builds the model) -- unless that module does work at import time (a script),
  since importing it would run it. A call with any other argument (a local variable,
  ``*args``, ``**cfg``) is not usable; the next call site is tried.
* Call sites are ordered deterministically: scripts named like test/infer/demo/eval first, then
  train scripts, then every other file; within a group by path, then line.
* The instance's first call in the same scope (``net(inputs_v)``, ``net(img, 'test')``) gives the
  forward's inputs: positional arguments that are literals are *not* tensors and are kept by
  position (:attr:`CallSite.forward_literals`), the others are counted as tensor inputs. The
  positions are bound to ``forward``'s parameter names by the caller that holds the class
  (:func:`bind_forward`, in the listing child: it has imported the class anyway); a forward call
  with a ``*args`` or a non-literal keyword argument is not captured.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck import SKIP_DIRS

#: the static pass's skipped folders, plus environments a repo may hold under other names
_SKIP_DIRS = SKIP_DIRS | {"env", "site-packages"}
_MAX_FILES = 5000
_MAX_BYTES = 2_000_000  # a generated file this big holds no call sites worth reading
_PREFERRED = re.compile(r"test|infer|demo|eval|predict|inference|sample|run", re.IGNORECASE)
_TRAIN = re.compile(r"train", re.IGNORECASE)
#: methods that return the same module (``Net(...).cuda()``)
_SAME_MODULE = frozenset({"cuda", "cpu", "to", "eval", "train", "float", "double", "half", "requires_grad_"})
_WRAPPERS = frozenset({"DataParallel", "DistributedDataParallel"})


@dataclass
class CallSite:
    """One usable construction of a class or factory in the repository."""

    path: str  # absolute file of the call
    line: int
    origin: str  # "basnet_test.py:57": the file relative to the root, and the line
    text: str  # the call as written, shortened: "BASNet(3, 1)"
    args: list[Any] = field(default_factory=list)  # JSON or {"$ref": "/abs/file.py:Name"}
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the instance's first call in the same scope, if simple; None when not found or not captured
    forward_line: int | None = None
    forward_tensors: int | None = None  # positional arguments that are not literals
    forward_literals: dict[int, Any] = field(default_factory=dict)  # position → literal value
    forward_keywords: dict[str, Any] = field(default_factory=dict)  # literal keyword arguments
    #: False when the construction's own arguments could not be read (``build_model(self.config.arch)``):
    #: the site then only tells how the instance is called
    args_known: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "origin": self.origin, "text": self.text,
                "args": self.args, "kwargs": self.kwargs, "args_known": self.args_known,
                "forward_line": self.forward_line,
                "forward_tensors": self.forward_tensors,
                "forward_literals": {str(k): v for k, v in self.forward_literals.items()},
                "forward_keywords": self.forward_keywords}


@dataclass
class _Module:
    path: Path  # resolved
    tree: ast.Module
    defined: dict[str, ast.AST]  # top-level name → its def/class/assignment value
    literal: dict[str, Any]  # top-level names assigned a literal once
    imports: dict[str, tuple[str, Path, str | None]]  # local name → ("module", file, None) | ("object", file, name)
    stars: list[Path]
    runs_at_import: bool


class RepoIndex:
    """The parsed files of one repository and the call sites in them (built lazily, once)."""

    def __init__(self, root: Path | str, files: Iterable[Path] | None = None) -> None:
        self.root = Path(root).resolve()
        if self.root.is_file():
            self.root = self.root.parent
        self._files = [Path(f).resolve() for f in files] if files is not None else None
        self._modules: dict[Path, _Module | None] = {}
        self._calls: dict[tuple[str, str], list[tuple[_Module, ast.Call, list[ast.AST]]]] | None = None

    # ----- files and modules ------------------------------------------------------------------

    def files(self) -> list[Path]:
        if self._files is None:
            self._files = sorted(_walk(self.root))[:_MAX_FILES]
        return self._files

    def module(self, path: Path) -> _Module | None:
        path = path.resolve()
        if path not in self._modules:
            self._modules[path] = None  # also guards against import cycles
            module = _parse(path)
            if module is not None:
                _resolve_imports(self, module)
            self._modules[path] = module
        return self._modules[path]

    def _find_module(self, source: Path, name: str, level: int) -> Path | None:
        """The file an import of ``name`` (``level`` dots) in ``source`` loads, if it is in the repo."""
        parts = [p for p in name.split(".") if p] if name else []
        if level:
            base = source.parent
            for _ in range(level - 1):
                base = base.parent
            bases = [base]
        else:  # the script's folder, its ancestors up to the root (sys.path.append('..')), the root
            bases, folder = [], source.parent
            while True:
                bases.append(folder)
                if folder == self.root or self.root not in folder.parents:
                    break
                folder = folder.parent
            if self.root not in bases:
                bases.append(self.root)
        for base in bases:
            target = base.joinpath(*parts)
            candidates = (target / "__init__.py", target.with_suffix(".py")) if parts else (target / "__init__.py",)
            for candidate in candidates:
                if candidate.is_file() and (candidate == self.root or self.root in candidate.parents):
                    return candidate.resolve()
        return None

    def _submodule(self, package: Path, attr: str) -> Path | None:
        if package.name != "__init__.py":
            return None
        for candidate in (package.parent / attr / "__init__.py", package.parent / f"{attr}.py"):
            if candidate.is_file():
                return candidate.resolve()
        return None

    # ----- name resolution --------------------------------------------------------------------

    def canonical(self, path: Path, name: str, depth: int = 0) -> tuple[Path, str] | None:
        """Where ``name``, as seen at the top of ``path``, is really defined (re-exports followed)."""
        module = self.module(path)
        if module is None or depth > 6:
            return None
        if name in module.defined:
            return module.path, name
        bound = module.imports.get(name)
        if bound is not None:
            kind, file, attr = bound
            if kind == "object" and attr is not None:
                # ``from pkg import X``: pkg's own X (``from .X import X`` in its __init__) wins over
                # the submodule pkg/X.py, as the attribute does at run time
                found = self.canonical(file, attr, depth + 1)
                return found if found is not None or self._submodule(file, attr) is not None else None
            return None  # a module, not an object
        for star in module.stars:
            found = self.canonical(star, name, depth + 1)
            if found is not None:
                return found
        return None

    def resolve(self, path: Path, node: ast.AST, local: set[str] | frozenset[str] = frozenset()) -> Any:
        """``("object", file, name)`` or ``("module", file)`` for a Name/Attribute chain, else None."""
        module = self.module(path)
        if module is None:
            return None
        if isinstance(node, ast.Name):
            if node.id in local:
                return None
            bound = module.imports.get(node.id)
            if bound is not None and bound[0] == "module":
                return ("module", bound[1])
            if bound is not None and bound[2] is not None:
                sub = self._submodule(bound[1], bound[2])
                if sub is not None and self.canonical(bound[1], bound[2]) is None:
                    return ("module", sub)
            found = self.canonical(path, node.id)
            return ("object", *found) if found else None
        if isinstance(node, ast.Attribute):
            base = self.resolve(path, node.value, local)
            if base is None or base[0] != "module":
                return None
            sub = self._submodule(base[1], node.attr)
            if sub is not None:
                return ("module", sub)
            found = self.canonical(base[1], node.attr)
            return ("object", *found) if found else None
        return None

    # ----- call sites -------------------------------------------------------------------------

    def _index_calls(self) -> dict[tuple[str, str], list[tuple[_Module, ast.Call, list[ast.AST]]]]:
        if self._calls is not None:
            return self._calls
        calls: dict[tuple[str, str], list[tuple[_Module, ast.Call, list[ast.AST]]]] = {}
        names = set()
        modules = [m for m in (self.module(f) for f in self.files()) if m is not None]
        for module in modules:
            names.update(module.defined)
        for module in modules:
            for node, scopes in _calls_with_scopes(module.tree):
                tail = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                if tail not in names:
                    continue
                found = self.resolve(module.path, node.func, _locals(scopes[-1]) if scopes else frozenset())
                if found is not None and found[0] == "object":
                    calls.setdefault((str(found[1]), found[2]), []).append((module, node, scopes))
        self._calls = calls
        return calls

    def call_sites(self, path: Path | str, name: str) -> list[CallSite]:
        """The usable calls constructing ``name`` defined in ``path``, best first (see the module doc)."""
        found = self._index_calls().get((str(Path(path).resolve()), name), [])
        sites = []
        for module, call, scopes in found:
            site = self._site(module, call, scopes)
            if site is not None:
                sites.append(site)
        sites.sort(key=lambda s: (_rank(s.origin), s.origin.rpartition(":")[0], s.line))
        return sites

    def _site(self, module: _Module, call: ast.Call, scopes: list[ast.AST]) -> CallSite | None:
        local = _locals(scopes[-1]) if scopes else frozenset()
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        known = True
        for arg in call.args:
            ok, value = self._value(module, arg, local)
            known = known and ok
            args.append(value)
        for keyword in call.keywords:
            ok, value = self._value(module, keyword.value, local) if keyword.arg is not None else (False, None)
            known = known and ok
            kwargs[keyword.arg or "**"] = value
        if not known:
            args, kwargs = [], {}
        try:
            relative = module.path.relative_to(self.root).as_posix()
        except ValueError:
            relative = module.path.name
        text = ast.unparse(call)
        site = CallSite(str(module.path), call.lineno, f"{relative}:{call.lineno}",
                        text if len(text) <= 80 else text[:77] + "...", args, kwargs, args_known=known)
        _capture_forward(site, call, scopes[-1] if scopes else module.tree, module.tree)
        return site if known or site.forward_line is not None else None

    def _value(self, module: _Module, node: ast.AST, local: set[str] | frozenset[str]) -> tuple[bool, Any]:
        literal = _literal(node)
        if literal[0]:
            return literal
        if not isinstance(node, (ast.Name, ast.Attribute)):
            return False, None
        found = self.resolve(module.path, node, local)
        if found is None or found[0] != "object":
            return False, None
        _, file, name = found
        owner = self.module(file)
        if owner is None:
            return False, None
        if name in owner.literal:
            return True, owner.literal[name]
        if owner.runs_at_import:
            return False, None  # importing it would run the script
        return True, {"$ref": f"{file}:{name}"}


def fitting_call(obj: Any, sites: Iterable[CallSite], fixed_kwargs: dict[str, Any] | None = None,
                 ) -> dict[str, Any] | None:
    """How the first call site whose arguments fit ``obj``'s signature builds it (``fixed_kwargs``,
    such as switched-off weights, winning): ``args``, ``kwargs``, ``forward_kwargs`` (a class's
    literal forward arguments bound by name; a factory's literal keywords), ``args_origin`` and
    ``site``; None when no call fits. Child side: ``obj`` is the imported class or factory."""
    import inspect

    for site in sites:
        if not site.args_known:
            continue
        kwargs = {**site.kwargs, **(fixed_kwargs or {})}
        try:
            inspect.signature(obj).bind(*site.args, **kwargs)
        except (TypeError, ValueError):
            continue
        if isinstance(obj, type):
            forward = bind_forward(obj.forward, site)
        else:
            forward = dict(site.forward_keywords) if not site.forward_literals else None
        return {"args": list(site.args), "kwargs": kwargs, "forward_kwargs": forward or {},
                "args_origin": site.origin, "site": site.to_json()}
    return None


def forward_call(obj: Any, sites: Iterable[CallSite]) -> tuple[dict[str, Any], str] | None:
    """For a model built without arguments: the non-tensor forward arguments its first captured
    call in the repo passes (``self.net(x, mode=1)``), and where; None when no call gives any."""
    for site in sites:
        if site.forward_line is None:
            continue
        if isinstance(obj, type):
            forward = bind_forward(obj.forward, site)
        else:  # a factory: only keywords can be bound without the class it returns
            forward = dict(site.forward_keywords) if not site.forward_literals else None
        if forward:
            return forward, f"{site.origin.rpartition(':')[0]}:{site.forward_line}"
    return None


def bind_forward(forward: Any, site: CallSite | dict[str, Any]) -> dict[str, Any] | None:
    """``forward``'s non-tensor arguments from a call site, by name: ``{"mode": "test"}``.

    ``forward`` is the class's (unbound) ``forward``; the literal positions of the call are bound
    to its parameters after ``self``. None when a literal lands on ``*args`` or past the end.
    """
    import inspect

    data = site.to_json() if isinstance(site, CallSite) else site
    literals = {int(k): v for k, v in (data.get("forward_literals") or {}).items()}
    kwargs = dict(data.get("forward_keywords") or {})
    if not literals:
        return kwargs
    try:
        parameters = list(inspect.signature(forward).parameters.values())[1:]  # self
    except (TypeError, ValueError):
        return None
    for index, value in literals.items():
        if index >= len(parameters) or parameters[index].kind not in (
                inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            return None
        kwargs[parameters[index].name] = value
    return kwargs


def describe_args(site: CallSite | dict[str, Any]) -> str:
    """``3, 1, block=RCLBlock``: the arguments as a note shows them ($refs by their name)."""
    data = site.to_json() if isinstance(site, CallSite) else site

    def show(value: Any) -> str:
        if isinstance(value, dict) and set(value) == {"$ref"}:
            return str(value["$ref"]).rpartition(":")[2]
        return repr(value)

    parts = [show(v) for v in data.get("args") or []]
    parts += [f"{k}={show(v)}" for k, v in (data.get("kwargs") or {}).items()]
    return ", ".join(parts)


# ----- helpers ------------------------------------------------------------------------------------


def _walk(folder: Path) -> Iterator[Path]:
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return
    for child in children:
        if child.is_dir():
            if child.name not in _SKIP_DIRS and not child.name.startswith(".") and not child.name.endswith(
                    ".egg-info"):
                yield from _walk(child)
        elif child.suffix == ".py" and child.is_file():
            yield child.resolve()


def _parse(path: Path) -> _Module | None:
    try:
        if path.stat().st_size > _MAX_BYTES:
            return None
        text = path.read_text(encoding="utf-8-sig")
        tree = ast.parse(text, str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return None  # Python 2, binary, unreadable: no call sites from it
    defined: dict[str, ast.AST] = {}
    assigned: dict[str, int] = {}
    literal: dict[str, Any] = {}
    for node in _top_statements(tree.body):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            defined[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defined[name.id] = node.value
                        assigned[name.id] = assigned.get(name.id, 0) + 1
                if isinstance(target, ast.Name):
                    ok, value = _literal(node.value)
                    if ok:
                        literal[target.id] = value
    literal = {k: v for k, v in literal.items() if assigned.get(k) == 1}
    return _Module(path, tree, defined, literal, {}, [], _does_work(tree))


def _resolve_imports(index: RepoIndex, module: _Module) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                file = index._find_module(module.path, alias.name, 0)
                if file is None:
                    continue
                if alias.asname:
                    module.imports.setdefault(alias.asname, ("module", file, None))
                else:  # ``import a.b`` binds ``a``
                    top = index._find_module(module.path, alias.name.split(".")[0], 0)
                    if top is not None:
                        module.imports.setdefault(alias.name.split(".")[0], ("module", top, None))
        elif isinstance(node, ast.ImportFrom):
            file = index._find_module(module.path, node.module or "", node.level)
            if file is None:
                continue
            for alias in node.names:
                if alias.name == "*":
                    module.stars.append(file)
                else:
                    module.imports.setdefault(alias.asname or alias.name, ("object", file, alias.name))


def _top_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Top-level statements, looking into ``if``/``try`` blocks (``try: from x import y``)."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and not _is_main_guard(node):
            yield from _top_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_statements(node.body + node.orelse + node.finalbody
                                       + [s for h in node.handlers for s in h.body])


def _is_main_guard(node: ast.If) -> bool:
    return "__main__" in ast.unparse(node.test)


def _does_work(tree: ast.Module) -> bool:
    """Would importing this file run work (a loop, a bare call, a with block) at the top level?"""
    from modelcheck.models.specs import SETUP_CALLS, dotted

    for node in tree.body:
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            callee = dotted(node.value.func)
            if callee is None or not SETUP_CALLS.match(callee):
                return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for call in ast.walk(node.value):  # ``net = Net(); net.load_state_dict(...)`` style scripts
                if isinstance(call, ast.Call) and dotted(call.func) in ("torch.load", "parser.parse_args",
                                                                          "main", "train", "test"):
                    return True
    return False


def _literal(node: ast.AST) -> tuple[bool, Any]:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None
    return _jsonable(value)


def _jsonable(value: Any) -> tuple[bool, Any]:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, (list, tuple)):
        out = []
        for item in value:
            ok, item = _jsonable(item)
            if not ok:
                return False, None
            out.append(item)
        return True, out
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        out_dict = {}
        for key, item in value.items():
            ok, item = _jsonable(item)
            if not ok:
                return False, None
            out_dict[key] = item
        return True, out_dict
    return False, None  # bytes, sets, complex numbers: not JSON


def _calls_with_scopes(tree: ast.Module) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
    """Every call with the function definitions enclosing it (innermost last)."""
    stack: list[tuple[ast.AST, list[ast.AST]]] = [(tree, [])]
    while stack:
        node, scopes = stack.pop()
        inner = [*scopes, node] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) else scopes
        if isinstance(node, ast.Call):
            yield node, scopes
        for child in ast.iter_child_nodes(node):
            stack.append((child, inner))


def _locals(scope: ast.AST) -> frozenset[str]:
    """Names a function binds itself (parameters, assignments, loop targets), imports excepted."""
    names: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
            if arg is not None:
                names.add(arg.arg)
    body = scope.body if isinstance(scope.body, list) else [scope.body]
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return frozenset(names)


def _rank(origin: str) -> int:
    name = origin.rpartition(":")[0]
    if _PREFERRED.search(name):
        return 0
    if _TRAIN.search(name):
        return 1
    return 2


def _is_self_attribute(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"


def _capture_self_forward(site: CallSite, attribute: str, scope: ast.AST, tree: ast.AST) -> None:
    """``self.net = build_model(...)`` in one method, ``self.net(x, mode=1)`` in another (a Solver
    class): the first call of ``self.net`` in the class whose arguments can be read."""
    owner = next((node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                  and any(child is scope for child in node.body)), None)
    if owner is None:
        return
    calls = sorted((node for node in ast.walk(owner) if isinstance(node, ast.Call)
                    and _is_self_attribute(node.func) and node.func.attr == attribute),
                   key=lambda node: (node.lineno, node.col_offset))
    for forward in calls:
        if _record_forward(site, forward):
            return


def _capture_forward(site: CallSite, call: ast.Call, scope: ast.AST, tree: ast.AST | None = None) -> None:
    """``net = Net(...)`` ... ``net(x, 'test')`` in the same scope → the forward's inputs (and
    ``self.net = Net(...)`` ... ``self.net(x, mode=1)`` anywhere in the same class)."""
    parents = {child: parent for parent in ast.walk(scope) for child in ast.iter_child_nodes(parent)}
    node: ast.AST = call
    while True:
        parent = parents.get(node)
        if (isinstance(parent, ast.Attribute) and parent.attr in _SAME_MODULE
                and isinstance(parents.get(parent), ast.Call)):
            node = parents[parent]
        elif isinstance(parent, ast.Call) and parent.args and parent.args[0] is node and (
                getattr(parent.func, "attr", None) in _WRAPPERS or getattr(parent.func, "id", None) in _WRAPPERS):
            node = parent
        else:
            break
    assign = parents.get(node)
    if (isinstance(assign, ast.Assign) and len(assign.targets) == 1 and _is_self_attribute(assign.targets[0])
            and tree is not None):
        _capture_self_forward(site, assign.targets[0].attr, scope, tree)
        return
    if not (isinstance(assign, ast.Assign) and len(assign.targets) == 1 and isinstance(assign.targets[0], ast.Name)):
        return
    name = assign.targets[0].id
    after = (assign.end_lineno or assign.lineno, assign.end_col_offset or 0)
    events = []
    for other in ast.walk(scope):
        position = (getattr(other, "lineno", 0), getattr(other, "col_offset", 0))
        if position <= after:
            continue
        if isinstance(other, ast.Call) and isinstance(other.func, ast.Name) and other.func.id == name:
            events.append((position, "call", other))
        elif isinstance(other, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in other.targets):
            keeps = any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(other.value))
            if not keeps:  # ``net = something else``: the instance is gone
                events.append((position, "rebound", other))
    events.sort(key=lambda e: e[0])
    if not events or events[0][1] != "call":
        return
    _record_forward(site, events[0][2])


def _record_forward(site: CallSite, forward: ast.Call) -> bool:
    """Record a call of the instance on ``site``; False when its arguments cannot be read."""
    tensors = 0
    literals: dict[int, Any] = {}
    for index, arg in enumerate(forward.args):
        if isinstance(arg, ast.Starred):
            return False
        ok, value = _literal(arg)
        if ok:
            literals[index] = value
        else:
            tensors += 1
    keywords = {}
    for keyword in forward.keywords:
        ok, value = _literal(keyword.value)
        if keyword.arg is None or not ok:
            return False
        keywords[keyword.arg] = value
    site.forward_line = forward.lineno
    site.forward_tensors = tensors
    site.forward_literals = literals
    site.forward_keywords = keywords
    return True

