"""The child's import and build environment for user code (child side only).

Third-party research code (2018-2020) dies before its model exists: weights that are not there
(``torch.load('resnext_101_32x4d.pth')``, ``pretrained=True`` downloads), Python 2 implicit
relative imports, and module-level imports of packages model building never uses
(``import matplotlib.pyplot as plt``). :func:`install` prepares one child process, once, before
any user code is imported (``specs.load_module`` calls it), so such code builds *as cloned*:

* **Weight-free building** (``ModelSpec.weight_free``): ``torch.load`` of a file that does not
  exist returns a :class:`SkippedWeights` sentinel (an empty, forgiving dict);
  ``nn.Module.load_state_dict`` of a sentinel (or of an empty dict the code that skipped a load
  passes, presumably filtered out of one: see ``_derived_from_skip``) is skipped; the known
  library loaders (:data:`LIBRARY_LOADERS`: ``torch.hub``,
  ``model_zoo.load_url``, torchvision's bound copy, timm's ``load_pretrained``) skip the
  download. They are patched before any user import, or right after their module is imported
  (a post-import hook), so torchvision's ``pretrained=True`` path sees the patched function.
  Existing files load as the code says; the network stays blocked by the worker.
* **Python 3 porting in memory** (``modelcheck.fixers.porting.port_source``, when present):
  project files (under the spec's folder / package root, never site-packages) are compiled from
  the ported source, line numbers kept; no file and no ``.pyc`` is written.
* **Stubs for missing packages**: a module-level ``import tensorboardX`` in the user's code gets
  a stub module whose every use raises ``ModuleNotFoundError`` saying so; ``from torchvision.
  models.resnet import model_urls`` (a name removed since) binds a stub too. Only imports written
  in project files, outside ``try/except ImportError``, are stubbed; library code keeps its own
  optional-dependency behaviour.

Each of these leaves a note (:func:`notes`) naming the user's ``file:line``.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import sysconfig
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelcheck import own_code_dirs

_NOT_GIVEN: Any = object()
_INITIALISATION = "built with the architecture's own initialisation"

#: module → {function name: kind}: library functions that load weights. ``url``: a download
#: (skipped in a weight-free build); ``pretrained``: a library's pretrained-weights loader
#: (skipped); ``file``: loads a local file (skipped only when the file does not exist). Patched
#: when the module is imported, or at install time when it already is.
LIBRARY_LOADERS: dict[str, dict[str, str]] = {
    "torch.hub": {"load_state_dict_from_url": "url"},
    "torch.utils.model_zoo": {"load_url": "url"},
    "torchvision._internally_replaced_utils": {"load_state_dict_from_url": "url"},
    "torchvision.models._api": {"load_state_dict_from_url": "url"},
    "torchvision.models.utils": {"load_state_dict_from_url": "url"},  # torchvision < 0.14
    "timm.models._builder": {"load_pretrained": "pretrained", "load_custom_pretrained": "pretrained"},
    "timm.models.helpers": {"load_pretrained": "pretrained", "load_checkpoint": "file"},  # timm < 0.9
    "timm.models._helpers": {"load_checkpoint": "file"},
}

#: names a stub stands in for by the real loader (an API that moved, imported from its old place)
_MOVED_LOADERS = {"load_state_dict_from_url": ("torch.hub", "load_state_dict_from_url"),
                  "load_url": ("torch.utils.model_zoo", "load_url")}

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


class _State:
    def __init__(self) -> None:
        self.installed = False
        self.weight_free = True
        #: resolved project folders, each ending in os.sep; or one file (no trailing os.sep) when its
        #: folder is a filesystem root or the home directory (see :func:`_unsafe_root`)
        self.roots: list[str] = []
        self.notes: dict[str, None] = {}
        self.skipped = 0  # weight loads skipped so far
        #: the user's frames that were running when a load was skipped (see ``_derived_from_skip``)
        self.skip_frames: list[types.FrameType] = []
        self.patched: dict[tuple[str, str], Any] = {}  # (module, name) → original
        #: copies of patched loaders rebound in other modules: (namespace, name, original, replacement)
        self.rebound: list[tuple[dict[str, Any], str, Any, Any]] = []
        self.torch_load: Any = None  # the originals install replaced, for :func:`uninstall`
        self.load_state_dict: Any = None
        self.finders: list[Any] = []
        self.porting: Any = None  # port_source, once modelcheck.fixers.porting exists
        self.real_import: Any = None
        self.stubbed: set[str] = set()  # stub modules made; dropped from sys.modules after each import
        #: real (library) parent module name → {child: stub module} hidden from all but project code
        self.hidden: dict[str, dict[str, Any]] = {}
        #: real parent module name → its own module ``__getattr__`` (None: it had none)
        self.parent_getattr: dict[str, Any] = {}
        self.sys_path: list[str] = []  # project roots _MissingFinder appended to sys.path


_state = _State()


def note(text: str) -> None:
    _state.notes.setdefault(text, None)


def notes() -> list[str]:
    """The notes recorded so far in this process: plain strings, deduplicated, in order."""
    return list(_state.notes)


# ----- where code lives ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    """The standard library, installed packages and modelcheck itself: never the user's code."""
    dirs = set(own_code_dirs())
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(str(Path(path).resolve()))
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


@functools.lru_cache(maxsize=8192)
def _resolved(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except (OSError, RuntimeError):
        return filename


def is_library(filename: str) -> bool:
    """Is this file torch/torchvision/timm/any installed package, the standard library or modelcheck?"""
    if not filename or filename.startswith("<"):
        return True
    resolved = _resolved(filename)
    return (resolved.startswith(_library_dirs()) or f"{os.sep}site-packages{os.sep}" in resolved
            or f"{os.sep}dist-packages{os.sep}" in resolved)


def is_project_file(filename: str | None) -> bool:
    """A file of the project being checked: under a project root and not library code."""
    if not filename or is_library(filename):
        return False
    resolved = _resolved(filename)
    return any(resolved.startswith(root) if root.endswith(os.sep) else resolved == root for root in _state.roots)


def project_files() -> list[str]:
    """The project's files this process imported: what a model is built from, beyond its own file
    (a backbone package, a config module), so their findings count for it."""
    files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    return sorted(_resolved(f) for f in files if f and f.endswith(".py") and is_project_file(f))


def display(filename: str) -> str:
    """A file as the notes show it: relative to the working directory, else to the project root."""
    resolved = Path(_resolved(filename))
    bases = [Path.cwd().resolve(), *(Path(root).parent for root in _state.roots[:1])]
    for base in bases:
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(resolved)


def user_site(depth: int = 2) -> str | None:
    """``file.py:11`` of the innermost frame in the user's code (not library code), if any."""
    frame: types.FrameType | None = sys._getframe(depth)
    while frame is not None:
        if not is_library(frame.f_code.co_filename):
            return f"{display(frame.f_code.co_filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return None


# ----- installing ---------------------------------------------------------------------------------


def _unsafe_root(folder: Path) -> bool:
    """A filesystem root or the home directory: as a project root, every file outside
    site-packages would count as the project's (ported in memory, its imports stubbed)."""
    from modelcheck.models.specs import top_folder

    return top_folder(Path(folder))


def project_roots(spec: Any) -> list[Path]:
    """The folders whose files are the project's: the spec file's folder and its package root; for
    a dotted module, the folder holding its top-level package unless that is an installed package.

    Never a filesystem root or the home directory (:func:`_unsafe_root`): such a package root gives
    way to the file's folder, and a file right in ``/`` or ``~`` is its own (one-file) root."""
    from modelcheck.models.specs import package_name

    if getattr(spec, "path", None):
        path = Path(spec.path).resolve()
        root, _ = package_name(path)
        roots = [folder for folder in dict.fromkeys([root, path.parent]) if not _unsafe_root(folder)]
        return roots or [path]
    module = getattr(spec, "module", None)
    if not module:
        return []
    top = module.partition(".")[0]
    found = importlib.machinery.PathFinder.find_spec(top)
    if found is None or not found.origin:
        return []
    location = Path(found.origin).resolve().parent
    if found.submodule_search_locations:  # a package: its parent folder holds it
        location = location.parent if not _unsafe_root(location.parent) else location
    elif _unsafe_root(location):  # a lone module right in ``/`` or ``~``: only that file
        location = Path(found.origin).resolve()
    return [] if is_library(str(location / "x.py")) else [location]


def install(spec: Any = None, *, weight_free: bool | None = None) -> None:
    """Prepare this process for importing and building ``spec``'s user code (idempotent; each call
    may add the spec's project roots). Call before any user code is imported; :func:`uninstall`
    undoes it."""
    for root in project_roots(spec) if spec is not None else []:
        if root.is_file():
            text = str(root)  # one file: its folder is / or ~ (see project_roots)
        elif _unsafe_root(root):
            continue  # never a filesystem root or the home directory
        else:
            text = str(root).rstrip(os.sep) + os.sep
        if text not in _state.roots:
            _state.roots.append(text)
    if weight_free is not None:
        _state.weight_free = weight_free
    if _state.installed:
        return  # the first spec decides weight-freeness: later ones are its ``$ref`` arguments
    if weight_free is None:
        _state.weight_free = bool(getattr(spec, "weight_free", True)) if spec is not None else True
    _state.installed = True
    try:
        from modelcheck.fixers.porting import port_source  # written alongside; optional until then
    except ImportError:
        port_source = None
    _state.porting = port_source
    _state.finders = [_FirstFinder(), _MissingFinder()]
    sys.meta_path.insert(0, _state.finders[0])
    sys.meta_path.append(_state.finders[1])
    _state.real_import = builtins.__import__
    builtins.__import__ = _import
    import torch
    import torch.nn as nn

    _state.torch_load = torch.load
    _state.load_state_dict = nn.Module.__dict__["load_state_dict"]
    torch.load = _patched_torch_load(torch.load)
    nn.Module.load_state_dict = _patched_load_state_dict(nn.Module.load_state_dict)
    for module_name in LIBRARY_LOADERS:
        module = sys.modules.get(module_name)
        if module is not None:
            _patch_library(module)


def uninstall() -> None:
    """Undo :func:`install` in this process (idempotent): ``builtins.__import__``, the meta-path
    finders, ``torch.load``, ``nn.Module.load_state_dict`` and the library loaders are the
    originals again, stubs are gone from ``sys.modules`` and their parents, project roots appended
    to ``sys.path`` are removed, and the state (roots, notes, skips) starts afresh. For in-process
    callers such as the tests; the child jobs simply exit."""
    global _state
    state = _state
    if state.installed:
        _restore_import_hooks(state)
        _restore_loaders(state)
    _remove_stubs(state)
    for folder in state.sys_path:
        while folder in sys.path:
            sys.path.remove(folder)
    _guarded_lines.cache_clear()
    _state = _State()


def _restore_import_hooks(state: _State) -> None:
    """``builtins.__import__`` and ``sys.meta_path`` without modelcheck's import and finders."""
    if builtins.__import__ is _import:
        builtins.__import__ = state.real_import
    for finder in state.finders:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)


def _restore_loaders(state: _State) -> None:
    """The original ``torch.load``, ``nn.Module.load_state_dict``, library loaders and the copies
    of them rebound in other modules; one something else replaced since is left alone."""
    torch = sys.modules.get("torch")
    if torch is not None and state.torch_load is not None:
        if getattr(torch.load, "_modelcheck_patched", False):
            torch.load = state.torch_load
        torch.nn.Module.load_state_dict = state.load_state_dict
    for (module_name, name), original in state.patched.items():
        module = sys.modules.get(module_name)
        if module is not None and getattr(getattr(module, name, None), "_modelcheck_patched", False):
            setattr(module, name, original)
    for namespace, name, original, replacement in state.rebound:
        if namespace.get(name) is replacement:
            namespace[name] = original


def _remove_stubs(state: _State) -> None:
    """Stubs out of ``sys.modules``, and out of their parents with the ``__getattr__`` hiding them."""
    for stubbed in state.stubbed:
        if isinstance(sys.modules.get(stubbed), StubModule):
            del sys.modules[stubbed]
    for parent_name, hidden in state.hidden.items():
        parent = sys.modules.get(parent_name)
        if parent is not None:
            _unhide(parent.__dict__, hidden, state.parent_getattr.get(parent_name))


def _unhide(namespace: dict[str, Any], hidden: Mapping[str, Any], original_getattr: Any) -> None:
    """One parent module's namespace without its stub children and with its own ``__getattr__``
    (none when it had none)."""
    for child, stub in hidden.items():
        if namespace.get(child) is stub:
            del namespace[child]
    if getattr(namespace.get("__getattr__"), "_modelcheck_hider", False):
        if original_getattr is None:
            del namespace["__getattr__"]
        else:
            namespace["__getattr__"] = original_getattr


def _patch_library(module: types.ModuleType) -> None:
    """Patch the loader functions of one module of :data:`LIBRARY_LOADERS`, and rebind copies of
    them that modules imported earlier hold (``from torch.hub import load_state_dict_from_url``)."""
    for name, kind in LIBRARY_LOADERS.get(module.__name__, {}).items():
        original = getattr(module, name, None)
        qualname = f"{module.__name__}.{name}"
        if original is None or getattr(original, "_modelcheck_name", None) == qualname:
            continue
        if getattr(original, "_modelcheck_patched", False):  # bound from a patched module: own name
            original = original.__wrapped__
        replacement = _loader_replacement(kind, original, qualname)
        setattr(module, name, replacement)
        _state.patched[(module.__name__, name)] = original
        for other in list(sys.modules.values()):
            namespace = getattr(other, "__dict__", None)
            if not isinstance(namespace, dict) or other is module:
                continue
            own = LIBRARY_LOADERS.get(getattr(other, "__name__", ""), {})
            for attr, value in list(namespace.items()):
                if value is original and attr not in own:  # model_zoo.load_url: patched under its own name
                    namespace[attr] = replacement
                    _state.rebound.append((namespace, attr, original, replacement))


class _PatchingLoader(importlib.abc.Loader):
    """Runs a library module's own loader, then patches its weight loaders (the post-import hook)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: Any) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.inner.exec_module(module)
        _patch_library(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _FirstFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: ports project files in memory; hooks the library loaders' modules."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in LIBRARY_LOADERS:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _PatchingLoader(spec.loader)
                    return spec
            return None
        if _state.porting is None or not _state.roots:
            return None
        if path is not None and not any(is_project_file(os.path.join(str(p), "x.py")) for p in path):
            return None  # a submodule of a library package: the fast, common case
        if path is None and (importlib.machinery.BuiltinImporter.find_spec(name) is not None
                             or importlib.machinery.FrozenImporter.find_spec(name) is not None):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        if not is_project_file(spec.origin):
            return None
        spec.loader = PortingLoader(spec.name, spec.origin)
        return spec


class PortingLoader(importlib.machinery.SourceFileLoader):
    """Compiles ``port_source(source)``, always from the source: no ``.pyc`` read or written."""

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        source = importlib.util.decode_source(self.get_data(path))
        # the package the module lives in: "" for one imported as a top-level module (its folder
        # on sys.path, `import resnet`), where `from . import config` would fail
        package = fullname if self.is_package(fullname) else fullname.rpartition(".")[0]
        return compile_ported(source, path, package=package)

    def set_data(self, path: str, data: bytes, *, _mode: int = 0o666) -> None:
        return None  # never write bytecode for a ported file


def compile_ported(source: str, path: str, *, package: str | None = None) -> types.CodeType:
    """The code of ``source`` ported to Python 3 in memory (each change noted), or as written.
    ``package``: the package the module is imported into ("" for a top-level module: no
    implicit relative import is rewritten then), None when unknown (the folder decides)."""
    port = _state.porting
    if port is not None:
        try:
            ported, changes = port(source, path, package=package)
            code = compile(ported, path, "exec", dont_inherit=True)
        except Exception:  # a porter that cannot handle the file: compile it as written
            pass
        else:
            for change_code, line, description in changes:
                note(f"ported in memory: {display(path)}:{line} {change_code} {description}")
            return code
    return compile(source, path, "exec", dont_inherit=True)


def source_loader(name: str, path: Path) -> Any:
    """The loader for a spec's own file imported by location: porting when it is a project file."""
    if _state.porting is not None and is_project_file(str(path)):
        return PortingLoader(name, str(path))
    return None


def set_porting(enabled: bool) -> None:
    """Turn in-memory porting on or off for the imports from now on (call after :func:`install`,
    before any user import). Fix verification turns it off to build the fixed files as written:
    they must build on plain Python 3, not only ported again in memory."""
    if not enabled:
        _state.porting = None
        return
    try:
        from modelcheck.fixers.porting import port_source
    except ImportError:
        port_source = None
    _state.porting = port_source


# ----- weights ------------------------------------------------------------------------------------


class MissingWeightsError(AttributeError):
    """What a skipped load was used as an object (a whole pickled model) raises."""


class SkippedWeights(dict):  # a real dict: code filters, copies and iterates it
    """What a skipped weights load returns: an empty state dict that forgives every lookup.

    ``ckpt['state_dict']`` gives another sentinel, ``pop``/``get``/``del`` of a missing key
    work, iterating it yields nothing; ``nn.Module.load_state_dict`` skips it. Used as an object
    (``model = torch.load('model.pth'); model.eval()``) it fails, saying the file is missing.
    """

    def __init__(self, source: str, where: str | None = None, why: str = "the file does not exist") -> None:
        super().__init__()
        self.__dict__["_mc_source"] = source
        self.__dict__["_mc_where"] = where
        self.__dict__["_mc_why"] = why  # why the load was skipped: "no such file", "no downloads ..."

    def __missing__(self, key: Any) -> SkippedWeights:
        return SkippedWeights(f"{self._mc_source}[{key!r}]", self._mc_where, self._mc_why)

    def get(self, key: Any, default: Any = _NOT_GIVEN) -> Any:
        if key in self:
            return dict.__getitem__(self, key)
        return self.__missing__(key) if default is _NOT_GIVEN else default

    def pop(self, key: Any, default: Any = _NOT_GIVEN) -> Any:
        if key in self:
            return dict.pop(self, key)
        return self.__missing__(key) if default is _NOT_GIVEN else default

    def __delitem__(self, key: Any) -> None:
        if key in self:
            dict.__delitem__(self, key)

    def keys(self) -> Any:  # Python 2 code indexes it: ``keys = w.keys(); w[keys[0]]``
        return _SkippedKeys(self._mc_source)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        """``param.data.copy_(skipped[k])`` (copying a pretrained tensor by hand) keeps the initialisation."""
        if getattr(func, "__name__", "") == "copy_" and args:
            return args[0]
        skipped = next((a for a in args if isinstance(a, SkippedWeights)), None)
        raise MissingWeightsError((skipped or cls("weights")).explain(f"{getattr(func, '__name__', func)}(...)"))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise MissingWeightsError(self.explain(f".{name}"))

    def explain(self, use: str) -> str:
        where = f" at {self._mc_where}" if self._mc_where else ""
        return (f"{self._mc_source}{where} was skipped ({self._mc_why}), and the code uses what it "
                f"loads as an object ({use}): a whole pickled model cannot be built without its file")

    def __repr__(self) -> str:
        return f"<skipped weights: {self._mc_source}>"

    def __reduce__(self) -> Any:
        return (dict, ())


class _SkippedKeys(list):  # empty, but indexable as Python 2's ``dict.keys()`` list was
    def __init__(self, source: str) -> None:
        super().__init__()
        self._mc_source = source

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):  # ``keys[1:]``: still no keys
            return _SkippedKeys(self._mc_source)
        return f"<{self._mc_source} key {index}>"


def _skip(what: str, why: str, where: str | None) -> SkippedWeights:
    if not _state.skipped:
        note("weights: weight-free build: weight files that do not exist and downloads are skipped "
             "(--no-weight-free loads weights as the code says)")
    _state.skipped += 1
    _remember_skip_frames()
    place = f" at {where}" if where else ""
    note(f"weights: skipped {what}{place} ({why}); {_INITIALISATION}")
    return SkippedWeights(what, where, why)


def _user_frames(depth: int) -> list[types.FrameType]:
    """The frames of the user's code (not library code) on the stack, innermost first."""
    frame: types.FrameType | None = sys._getframe(depth + 1)
    frames = []
    while frame is not None:
        if not is_library(frame.f_code.co_filename):
            frames.append(frame)
        frame = frame.f_back
    return frames


def _prune_skip_frames() -> None:
    """Keep only the remembered frames still running (a finished one may hold the user's locals)."""
    if not _state.skip_frames:
        return
    running = set()
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        running.add(id(frame))
        frame = frame.f_back
    _state.skip_frames = [f for f in _state.skip_frames if id(f) in running]


def _remember_skip_frames() -> None:
    _prune_skip_frames()
    for frame in _user_frames(2):
        if frame.f_code.co_name == "<module>":
            continue  # a module's body runs around every model it defines: its globals count instead
        if not any(frame is known for known in _state.skip_frames):
            _state.skip_frames.append(frame)


def _derived_from_skip(depth: int) -> bool:
    """May an empty state dict given to ``load_state_dict`` be what is left of a skipped load?

    A filtered copy (``{k: v for k, v in ckpt.items() if k in model_dict}``) of a
    :class:`SkippedWeights` is a new, plain, empty dict, so it cannot be recognised by identity.
    The rule instead ties it to a skip through the user's code that passes it: yes when one of the
    user's function frames calling ``load_state_dict`` was already running when a load was skipped
    (the factory or constructor that called ``torch.load`` and now loads what it filtered; a
    module body does not count, it runs around every model the module defines), or holds a
    skipped load in a local variable or in its module's globals (``ckpt = torch.load(...)`` at
    module level). An empty dict from anywhere else (a bug in the user's code, or a call made by
    a model unrelated to the skip) is loaded as written, and fails as it would without modelcheck.
    """
    _prune_skip_frames()
    seen: set[int] = set()
    for frame in _user_frames(depth + 1):
        if any(frame is known for known in _state.skip_frames):
            return True
        for namespace in (frame.f_locals, frame.f_globals):
            if id(namespace) in seen:
                continue
            seen.add(id(namespace))
            if any(isinstance(value, SkippedWeights) for value in list(namespace.values())):
                return True
    return False


def _short(value: Any) -> str:
    if isinstance(value, Stub):  # before PathLike: a stub has a (raising) __fspath__
        text = object.__getattribute__(value, "_mc_path")
    elif isinstance(value, (str, bytes)):
        text = repr(value)
    elif isinstance(value, os.PathLike):
        text = repr(os.fspath(value))
    else:
        text = type(value).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _missing_file(f: Any) -> bool:
    if isinstance(f, Stub):
        return True
    if isinstance(f, (str, bytes, os.PathLike)):
        try:
            return not os.path.exists(f)
        except (TypeError, ValueError):
            return False
    return False


def _patched_torch_load(original: Any) -> Any:
    @functools.wraps(original)
    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if _state.weight_free and _missing_file(f):
            why = "a stub of a missing module" if isinstance(f, Stub) else "no such file"
            return _skip(f"torch.load({_short(f)})", why, user_site())
        if isinstance(f, Stub):
            f._mc_fail("torch.load")
        return original(f, *args, **kwargs)

    load._modelcheck_patched = True  # type: ignore[attr-defined]
    return load


def _patched_load_state_dict(original: Any) -> Any:
    @functools.wraps(original)
    def load_state_dict(self: Any, state_dict: Any = _NOT_GIVEN, *args: Any, **kwargs: Any) -> Any:
        from torch.nn.modules.module import _IncompatibleKeys

        if isinstance(state_dict, (SkippedWeights, Stub)):
            return _IncompatibleKeys([], [])
        strict = kwargs.get("strict", args[0] if args else True)
        if (_state.weight_free and _state.skipped and isinstance(state_dict, Mapping) and not state_dict
                and strict and len(self.state_dict()) and _derived_from_skip(1)):
            where = user_site()
            note(f"weights: skipped {type(self).__name__}.load_state_dict({{}})" + (f" at {where}" if where else "")
                 + f" (empty after a skipped load); {_INITIALISATION}")
            return _IncompatibleKeys([], [])
        if state_dict is _NOT_GIVEN:
            return original(self, *args, **kwargs)
        return original(self, state_dict, *args, **kwargs)

    load_state_dict._modelcheck_patched = True  # type: ignore[attr-defined]
    return load_state_dict


def _loader_replacement(kind: str, original: Any, qualname: str) -> Any:
    short = qualname.rsplit(".", 1)[-1]

    @functools.wraps(original)
    def replacement(*args: Any, **kwargs: Any) -> Any:
        if not _state.weight_free:
            return original(*args, **kwargs)
        if kind == "url":
            url = args[0] if args else kwargs.get("url", "")
            return _skip(f"{short}({_short(url)})", "no downloads in a weight-free build", user_site())
        if kind == "pretrained":
            model = args[0] if args else kwargs.get("model")
            cfg = (args[1] if len(args) > 1 else kwargs.get("pretrained_cfg")) or getattr(model, "pretrained_cfg", None)
            arch = (cfg or {}).get("architecture") if isinstance(cfg, Mapping) else None
            _skip(f"{qualname.split('.')[0]} pretrained weights" + (f" for {arch}" if arch else ""),
                  "no downloads in a weight-free build", user_site())
            return None
        path = next((a for a in args if isinstance(a, (str, os.PathLike, Stub))), kwargs.get("checkpoint_path"))
        if path is not None and _missing_file(path):
            _skip(f"{short}({_short(path)})", "no such file", user_site())
            return None
        return original(*args, **kwargs)

    replacement._modelcheck_patched = True  # type: ignore[attr-defined]
    replacement._modelcheck_name = qualname  # type: ignore[attr-defined]
    return replacement


def check_built(spec: Any, model: Any) -> None:
    """Fail clearly when what was built is a skipped load (a whole pickled model that is not there)."""
    _prune_skip_frames()  # the frames of a finished build hold its locals
    if isinstance(model, SkippedWeights):
        raise TypeError(f"{spec.name}: {model.explain('as the model')}")
    if isinstance(model, Stub):
        model._mc_fail("as the model")


# ----- stubs for missing modules and names ----------------------------------------------------------


class Stub:
    """Stands in for something a missing package would have provided. Looking things up on it
    works (more stubs); using it (calling, iterating, arithmetic, ``bool``, ``str``, ``isinstance``)
    raises ``ModuleNotFoundError`` naming the package and what was used. A call written at module
    level (``matplotlib.use('Agg')``) returns a stub instead: configuration, not model building."""

    __slots__ = ("_mc_missing", "_mc_path")

    def __init__(self, missing: str, path: str) -> None:
        object.__setattr__(self, "_mc_missing", missing)  # "matplotlib is not installed"
        object.__setattr__(self, "_mc_path", path)  # "matplotlib.pyplot.figure"

    def _mc_fail(self, use: str = "") -> Any:
        top = self._mc_path.split(".")[0].split("[")[0]
        what = self._mc_path + (f" ({use})" if use else "")
        error = ModuleNotFoundError(
            f"{self._mc_missing}: modelcheck stubbed it so the model could be imported; {what} was used")
        error.name = top
        raise error

    def __getattr__(self, name: str) -> Any:
        if (name.startswith("__") and name.endswith("__")) or name.startswith("_mc_"):
            raise AttributeError(name)  # _mc_*: an empty slot (a half-made copy) must not recurse
        return Stub(self._mc_missing, f"{self._mc_path}.{name}")

    def __setattr__(self, name: str, value: Any) -> None:
        return None  # configuration (``plt.rcParams = ...``): nothing to do

    def __reduce_ex__(self, protocol: Any) -> Any:
        """Pickling fails saying so: the real object may not pickle, so ``pickle.dumps(model)``
        must not report OK for a model holding a stand-in."""
        return self._mc_fail("pickled")

    def __reduce__(self) -> Any:
        return self._mc_fail("pickled")

    def __copy__(self) -> Stub:
        return self  # immutable for every purpose: a copy is the same stand-in

    def __deepcopy__(self, memo: Any) -> Stub:
        return self

    def __getitem__(self, key: Any) -> Any:
        return Stub(self._mc_missing, f"{self._mc_path}[{key!r}]")

    def __setitem__(self, key: Any, value: Any) -> None:
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        if caller.f_code.co_name == "<module>" and is_project_file(caller.f_code.co_filename):
            return Stub(self._mc_missing, f"{self._mc_path}()")
        return self._mc_fail("called")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        stub = self

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            stub._mc_fail("subclassed and instantiated")

        return (type(self._mc_path.rsplit(".", 1)[-1], (), {"__init__": __init__}),)

    def __repr__(self) -> str:
        return f"<modelcheck stub for {self._mc_path}>"

    def __instancecheck__(self, other: Any) -> bool:
        return self._mc_fail("isinstance")

    def __subclasscheck__(self, other: Any) -> bool:
        return self._mc_fail("issubclass")


def _raiser(use: str) -> Any:
    def method(self: Stub, *args: Any) -> Any:
        return self._mc_fail(use)

    return method


for _name in ("iter", "len", "bool", "int", "float", "index", "str", "format", "bytes", "fspath", "contains",
              "enter", "exit", "lt", "le", "gt", "ge", "neg", "pos", "abs", "invert"):
    setattr(Stub, f"__{_name}__", _raiser(_name if _name not in ("str", "format") else "str-formatting"))
for _name in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift", "and",
              "or", "xor"):
    for _prefix in ("", "r"):
        setattr(Stub, f"__{_prefix}{_name}__", _raiser("arithmetic"))


class StubModule(types.ModuleType):
    """A missing module: its attributes are :class:`Stub` objects; submodules are stub modules."""

    def __init__(self, name: str, missing: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []
        self.__dict__["_mc_missing"] = missing

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        if name in _MOVED_LOADERS:  # ``from torchvision.models.utils import load_state_dict_from_url``
            home, real = _MOVED_LOADERS[name]
            return getattr(importlib.import_module(home), real)
        return Stub(self.__dict__["_mc_missing"], f"{self.__name__}.{name}")


class _StubLoader(importlib.abc.Loader):
    def __init__(self, missing: str) -> None:
        self.missing = missing

    def create_module(self, spec: Any) -> types.ModuleType:
        _state.stubbed.add(spec.name)
        return StubModule(spec.name, self.missing)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def _importer() -> tuple[types.FrameType | None, bool]:
    """The frame whose code runs the import statement being resolved, and whether the import
    machinery got there through ``from package import name`` (a submodule try)."""
    frame: types.FrameType | None = sys._getframe(2)
    fromlist = False
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen importlib") or filename == __file__:
            fromlist = fromlist or frame.f_code.co_name == "_handle_fromlist"
            frame = frame.f_back
            continue
        return frame, fromlist
    return None, fromlist


@functools.lru_cache(maxsize=256)
def _guarded_lines(filename: str) -> frozenset[int]:
    """Lines inside a ``try`` whose handlers catch ImportError (or anything broader)."""
    try:
        tree = ast.parse(Path(filename).read_text(encoding="utf-8-sig", errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return frozenset()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) or not node.body:
            continue
        catches = False
        for handler in node.handlers:
            names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            for name in names:
                label = name.id if isinstance(name, ast.Name) else name.attr if isinstance(name, ast.Attribute) else ""
                catches = catches or name is None or label in _IMPORT_ERRORS
        if catches:
            lines.update(range(node.body[0].lineno, (node.body[-1].end_lineno or node.body[-1].lineno) + 1))
    return frozenset(lines)


def _guarded(frame: types.FrameType) -> bool:
    return frame.f_lineno in _guarded_lines(frame.f_code.co_filename)


def _version(top: str) -> str:
    module = sys.modules.get(top)
    version = getattr(module, "__version__", None)
    return f"{top} {version}" if isinstance(version, str) else top


class _MissingFinder(importlib.abc.MetaPathFinder):
    """Last on ``sys.meta_path``: a stub for a module nothing else found, imported by project code."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        parent = name.rpartition(".")[0]
        if parent and isinstance(sys.modules.get(parent), StubModule):
            missing = sys.modules[parent].__dict__["_mc_missing"]
            return importlib.util.spec_from_loader(name, _StubLoader(missing), is_package=True)
        frame, fromlist = _importer()
        if frame is None or fromlist or not is_project_file(frame.f_code.co_filename):
            return None
        if not parent and not _sibling(frame, name):
            found = self._project_package(name, path, target, frame)
            if found is not None:
                return found
        if _guarded(frame):
            return None
        top = name.partition(".")[0]
        if parent:
            parent_module = sys.modules.get(parent)
            if parent_module is None or is_project_file(getattr(parent_module, "__file__", None)):
                return None  # the project's own package: a real error
            missing = f"{name} does not exist in the installed {_version(top)}"
        else:
            if _sibling(frame, name):
                return None  # an implicit relative import (Python 2) of a sibling: not a missing package
            missing = f"{name} is not installed"
        if name not in _state.stubbed:  # one note per missing module, at its first import
            note(f"{missing if parent else name + ' not installed'}: stubbed "
                 f"(imported at {display(frame.f_code.co_filename)}:{frame.f_lineno})")
        return importlib.util.spec_from_loader(name, _StubLoader(missing), is_package=True)

    def _project_package(self, name: str, path: Any, target: Any, frame: types.FrameType) -> Any:
        """``from lib.nms import x`` with ``lib/`` at a project root that is not on ``sys.path`` (a
        file in ``models/`` imported by its folder): the project's own package, not a missing one.
        The root is appended to ``sys.path``, as running the repo's scripts from there would have
        it, and the package is imported for real (ported like any project file)."""
        if not name.isidentifier():
            return None
        for root in _state.roots:
            if not root.endswith(os.sep):
                continue  # a one-file root
            folder = Path(root)
            package = folder / name
            if not ((folder / f"{name}.py").is_file() or (package / "__init__.py").is_file()
                    or (package.is_dir() and any(package.glob("*.py")))):
                continue
            entry = str(folder)
            if entry not in sys.path:
                sys.path.append(entry)  # last: never shadows what was importable already
                _state.sys_path.append(entry)
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    shown = display(entry)
                    note(f"project package {name} is not importable from its importer's folder: imported "
                         f"from the project root {entry if shown == '.' else shown} (added to sys.path) "
                         f"(imported at {display(frame.f_code.co_filename)}:{frame.f_lineno})")
                    return spec
        return None


def _sibling(frame: types.FrameType, name: str) -> bool:
    """Is ``name`` a module or package next to the file running ``frame``?"""
    folder = Path(frame.f_code.co_filename).parent
    return (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()


def _asking_file() -> str:
    """The file of the code that asked for what is being looked up, past the import machinery."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""


def _hide_stub(name: str, stub: StubModule) -> None:
    """Take a stub submodule off its real (library) parent, where importlib bound it
    (``torch._six`` after ``from torch._six import PY3``): library code (``from torch import
    _six``, ``hasattr(torch, "_six")``) must keep seeing it missing. The project's own code still
    finds it there (``import torch._six as six``, ``torch._six.string_classes`` after
    ``import torch._six``) through a module ``__getattr__`` (PEP 562) put on the parent that answers
    only the project's files, and otherwise defers to the parent's own ``__getattr__``, if any."""
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if not isinstance(parent, types.ModuleType) or isinstance(parent, StubModule):
        return
    namespace = parent.__dict__
    if namespace.get(child) is stub:
        del namespace[child]
    _state.hidden.setdefault(parent_name, {})[child] = stub
    current = namespace.get("__getattr__")
    if getattr(current, "_modelcheck_hider", False):
        return
    _state.parent_getattr[parent_name] = current

    def __getattr__(attr: str) -> Any:
        hidden = _state.hidden.get(parent_name, {}).get(attr)
        if hidden is not None and is_project_file(_asking_file()):
            return hidden
        if current is not None:
            return current(attr)
        raise AttributeError(f"module {parent_name!r} has no attribute {attr!r}")

    __getattr__._modelcheck_hider = True  # type: ignore[attr-defined]
    namespace["__getattr__"] = __getattr__


class _FromProxy:
    """What ``from module import a, b`` reads its names from when some are missing in ``module``."""

    def __init__(self, module: Any, stubs: dict[str, Any]) -> None:
        self._mc_module = module
        self._mc_stubs = stubs

    def __getattr__(self, name: str) -> Any:
        if name in self._mc_stubs:
            return self._mc_stubs[name]
        return getattr(self._mc_module, name)


def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    """``builtins.__import__``: for project code only, a name missing from an installed module
    (removed by a newer version) is bound to a stub instead of raising ImportError."""
    try:
        module = _state.real_import(name, globals, locals, fromlist, level)
    finally:
        # the importer holds its stubs; later importers (libraries) must not find them, neither in
        # sys.modules nor as an attribute of a real parent module (see _hide_stub)
        for stubbed in list(_state.stubbed):
            stub = sys.modules.get(stubbed)
            if isinstance(stub, StubModule):
                del sys.modules[stubbed]
                _hide_stub(stubbed, stub)
    if not fromlist or not _state.roots or not isinstance(globals, dict):
        return module
    if not is_project_file(globals.get("__file__")) or isinstance(module, StubModule):
        return module
    missing = [n for n in fromlist if isinstance(n, str) and n != "*" and not hasattr(module, n)]
    if not missing:
        return module
    if is_project_file(getattr(module, "__file__", None)) or not isinstance(module, types.ModuleType):
        return module  # the project's own module: a real error (or a circular import) stays one
    frame = sys._getframe(1)
    if _guarded(frame):
        return module
    top = module.__name__.partition(".")[0]
    where = f"{display(frame.f_code.co_filename)}:{frame.f_lineno}"
    stubs: dict[str, Any] = {}
    for attr in missing:
        if attr in _MOVED_LOADERS:  # the loader moved (torchvision.models.utils → torch.hub)
            home, real = _MOVED_LOADERS[attr]
            stubs[attr] = getattr(importlib.import_module(home), real)
            note(f"{module.__name__}.{attr} does not exist in the installed {_version(top)}: "
                 f"used {home}.{real} (imported at {where})")
            continue
        missing_text = f"{module.__name__}.{attr} does not exist in the installed {_version(top)}"
        stubs[attr] = Stub(missing_text, f"{module.__name__}.{attr}")
        note(f"{missing_text}: stubbed (imported at {where})")
    return _FromProxy(module, stubs)
