"""The dynamic pass's child job: build one model, walk it, probe pickling, capture its graph.

Runs inside ``python -m modelcheck.jobs.worker`` (see :mod:`modelcheck.jobs.run`), never in the
parent. Returns plain JSON: the facts of every construct, in the very dataclasses the static
rules use (``UpsampleFacts``, ``PoolFacts``, ``StoredObjectFacts``), each with the source
location it maps to and its module path; the parent runs the same rules over them.

Choices, and why:

* **Construction sites** — ``nn.Module.__init__`` is wrapped while the model is imported and
  built; each call records the first stack frame that is neither torch/modelcheck/stdlib code
  nor the constructor chain of the module being built. That is the line that constructed the
  layer (``nn.MaxPool2d(..., ceil_mode=cfg["ceil"])`` inside a loop over a config dict), with its
  column span from ``co_positions()``. A ``sys.setprofile`` hook would see the same frames but
  pay for every Python call; the wrapper pays only per module constructed.
* **Pickle probe** — ``pickle.dumps(model)`` and ``torch.save(model, BytesIO())`` really run.
  Only when one fails is the object graph walked the way pickle walks it (``__reduce_ex__(2)``,
  ``nn.Module.__getstate__``, containers) to name *every* unpicklable object by attribute path
  (``4.0.0.lambda_func``), not only the first one pickle stops at. When both succeed that is a
  verified fact, and there is nothing to walk: what pickle does not reach cannot break it.
* **Graph capture** — one forward pass under ``torch.jit.trace`` with a ``TorchFunctionMode``
  active. The mode sees functional calls (``F.interpolate``, ``F.max_pool2d``, ...) with their
  Python arguments and the Python stack, which maps each to the user's file and line. The
  tracer is what tells whether an upsampling size came from a tensor's shape: while tracing,
  ``x.shape``/``x.size()`` hand out traced 0-dim tensors instead of ints, so a size holding
  tensors was computed from a shape, and a plain int is a constant to the exporter. It is also
  the very tracer the TorchScript ONNX exporter (the caffe2 target) uses, so data-dependent
  branches go the same way as in the export. ``torch.export`` would give the same provenance
  through SymInts but fails on much ordinary model code and is slower. If tracing fails, the
  forward runs once more without it and shape provenance is reported as unknown.
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import functools
import inspect
import io
import json
import linecache
import os
import pickle
import sys
import sysconfig
import time
import traceback
import types
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from modelcheck import own_code_dirs
from modelcheck.models.specs import (
    ExampleInputs,
    MissingInputs,
    ModelSpec,
    build_model,
    check_forward_inputs,
    load_object,
    make_inputs,
    one_line,
)
from modelcheck.static.source import UNKNOWN

ROOT_PATH = "(root)"  # the module path of the model itself
_UNKNOWN_JSON = {"$unknown": True}
_MAX_WALK = 500_000  # objects visited by the unpicklable-object walk before it gives up


# ----- facts as JSON (used by both sides) -----------------------------------------------------

def encode_value(value: Any) -> Any:
    """A facts value as JSON: UNKNOWN becomes ``{"$unknown": true}``, tuples become lists."""
    if value is UNKNOWN:
        return dict(_UNKNOWN_JSON)
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def decode_value(value: Any) -> Any:
    if value == _UNKNOWN_JSON:
        return UNKNOWN
    if isinstance(value, list):
        return tuple(decode_value(v) for v in value)
    return value


def encode_facts(facts: Any) -> dict[str, Any]:
    """``{"family": "pooling", "facts": {...}}`` for a rules facts dataclass."""
    from modelcheck.rules import FAMILIES

    family = next(family.name for family in FAMILIES if isinstance(facts, family.facts_type))
    return {"family": family,
            "facts": {f.name: encode_value(getattr(facts, f.name)) for f in dataclasses.fields(facts)}}


def decode_facts(data: dict[str, Any]) -> tuple[str, Any]:
    """(family name, facts dataclass) from :func:`encode_facts` output."""
    from modelcheck.rules import FAMILIES

    cls = next(family.facts_type for family in FAMILIES if family.name == data["family"])
    names = {f.name for f in dataclasses.fields(cls)}
    return data["family"], cls(**{k: decode_value(v) for k, v in data["facts"].items() if k in names})


# ----- source locations ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _internal_dirs() -> tuple[str, ...]:
    """Code that is not the user's: torch, modelcheck itself, the standard library."""
    import torch

    dirs = {str(Path(torch.__file__).resolve().parent), *own_code_dirs()}
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(str(Path(path).resolve()))
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


@functools.lru_cache(maxsize=4096)
def is_internal(filename: str) -> bool:
    if filename.startswith("<"):
        return True
    try:
        resolved = str(Path(filename).resolve())
    except OSError:
        resolved = filename
    return resolved.startswith(_internal_dirs()) or "site-packages" + os.sep + "torch" + os.sep in resolved


def _char_column(filename: str, line: int, byte_col: int | None) -> int:
    """1-based character column from ``co_positions``' 0-based UTF-8 byte offset."""
    if byte_col is None:
        return 1
    text = linecache.getline(filename, line)
    return len(text.encode("utf-8")[:byte_col].decode("utf-8", "replace")) + 1 if text else byte_col + 1


def frame_site(frame: types.FrameType) -> dict[str, Any]:
    """The source span a frame is executing (the whole call expression, for a call)."""
    code = frame.f_code
    filename = str(Path(code.co_filename).resolve()) if not code.co_filename.startswith("<") else code.co_filename
    line, end_line, col, end_col = frame.f_lineno, None, None, None
    try:
        position = next(islice(code.co_positions(), frame.f_lasti // 2, None))
        if position[0] is not None:
            line, end_line, col, end_col = position
    except (StopIteration, AttributeError, ValueError):
        pass
    site = {"path": filename, "line": line, "column": _char_column(filename, line, col)}
    if end_line is not None and end_col is not None:
        site["end_line"] = end_line
        site["end_column"] = _char_column(filename, end_line, end_col)
    return site


def definition_site(obj: Any) -> dict[str, Any] | None:
    """Where a function, lambda or class is written: file, line and the column of its keyword."""
    code = getattr(obj, "__code__", None)
    if code is not None:
        filename, line = code.co_filename, code.co_firstlineno
        column = None
        if getattr(obj, "__name__", "") == "<lambda>":
            column = _lambda_column(code)
    elif isinstance(obj, type):
        try:
            filename = inspect.getsourcefile(obj) or inspect.getfile(obj)
            line = inspect.getsourcelines(obj)[1]
        except (OSError, TypeError):
            return None
        column = None
    else:
        return None
    if not filename.startswith("<"):
        filename = str(Path(filename).resolve())
    if column is None:
        text = linecache.getline(filename, line)
        column = len(text) - len(text.lstrip()) + 1 if text.strip() else 1
    return {"path": filename, "line": line, "column": column}


def _lambda_column(code: types.CodeType) -> int | None:
    """The column of the ``lambda`` keyword: the last one before the body on its first line."""
    line = code.co_firstlineno
    text = linecache.getline(code.co_filename, line)
    body = next((c for ln, _, c, _ in code.co_positions() if ln == line and c), None)
    if not text:
        return None
    prefix = text.encode("utf-8")[:body].decode("utf-8", "replace") if body else text
    found = prefix.rfind("lambda")
    return found + 1 if found >= 0 else None


def _source_line(site: dict[str, Any] | None) -> str:
    if not site:
        return ""
    return linecache.getline(site["path"], site["line"]).rstrip("\n")


def _describe(site: dict[str, Any] | None) -> str | None:
    return f"{site['path']}:{site['line']}" if site else None


# ----- construction sites -------------------------------------------------------------------------

class ConstructionSites:
    """Records, for each nn.Module built while installed, the line that constructed it."""

    def __init__(self) -> None:
        self.sites: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._original: Any = None

    def __enter__(self) -> ConstructionSites:
        import torch.nn as nn

        original = self._original = nn.Module.__init__
        sites = self.sites

        @functools.wraps(original)
        def __init__(module: Any, *args: Any, **kwargs: Any) -> None:
            try:
                site = _construction_site(module, sys._getframe(1))
            except Exception:  # bookkeeping must never break the user's constructor
                site = None
            original(module, *args, **kwargs)
            if site is not None:
                with contextlib.suppress(TypeError):  # not weak-referenceable
                    sites[module] = site

        nn.Module.__init__ = __init__  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch.nn as nn

        nn.Module.__init__ = self._original  # type: ignore[method-assign]

    def get(self, module: Any) -> dict[str, Any] | None:
        try:
            return self.sites.get(module)
        except TypeError:
            return None


def _construction_site(module: Any, frame: types.FrameType | None) -> dict[str, Any] | None:
    while frame is not None:
        code = frame.f_code
        if code.co_name == "__init__" and code.co_argcount and frame.f_locals.get(code.co_varnames[0]) is module:
            pass  # the constructor chain of this very module (super().__init__() calls)
        elif not is_internal(code.co_filename):
            return frame_site(frame)
        frame = frame.f_back
    return None


# ----- module walk --------------------------------------------------------------------------------

def layer_apis(module: Any) -> list[tuple[Any, str]]:
    """(rule family, torch API name) for each family a torch layer is about (``torch.nn.MaxPool2d``):
    the family that owns it first, a fallback family (:attr:`Family.fallback`) after it."""
    from modelcheck.rules import FAMILIES

    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn.modules."):
            name = f"torch.nn.{cls.__name__}"
            found = [(family, name) for family in FAMILIES if name in family.layer_apis]
            return sorted(found, key=lambda pair: pair[0].fallback)
    return []


def layer_api(module: Any) -> tuple[Any, str] | None:
    """The first of :func:`layer_apis`: the family that owns the layer, and its API name."""
    found = layer_apis(module)
    return found[0] if found else None


@dataclass
class ModuleWalk:
    """What the module walk found: constructs with facts, every module's path, and the construction
    sites of the layers whose facts come from their calls (``Family.layer_calls``), by path."""

    constructs: list[dict[str, Any]]
    paths: dict[int, str]
    layer_sites: dict[str, dict[str, Any] | None]


def walk_modules(model: Any, sites: ConstructionSites) -> ModuleWalk:
    """Facts for every layer a rule family is about, by module path, at its construction site."""
    walk = ModuleWalk([], {}, {})
    site_by_path: dict[str, dict[str, Any] | None] = {}
    for path, module in model.named_modules():
        walk.paths[id(module)] = path or ROOT_PATH
        site = site_by_path[path] = sites.get(module)
        found = layer_apis(module)
        if not found:
            continue
        if site is None:  # built without __init__ (deepcopy): the nearest ancestor's site
            parts = path.split(".")
            site = next((site_by_path.get(".".join(parts[:i])) for i in range(len(parts) - 1, -1, -1)
                         if site_by_path.get(".".join(parts[:i]))), None)
        for family, api in found:
            facts = family.layer_facts(module, api)
            if facts is None:
                if family.layer_calls:
                    walk.layer_sites[path or ROOT_PATH] = site
                continue
            walk.constructs.append({
                **encode_facts(facts), "origin": "module", "module_path": path or ROOT_PATH,
                "location": site, "source": _source_line(site),
            })
    return walk


def mark_unrun_layers(constructs: list[dict[str, Any]], ran: set[str]) -> None:
    """``ran: False`` on each walked layer forward never called: built, but not part of what is
    exported (a ``self.ln`` left unused), so its facts say nothing about this model's export."""
    for construct in constructs:
        if construct.get("origin") == "module" and construct.get("module_path") not in ran:
            construct["ran"] = False


# ----- pickle probe -------------------------------------------------------------------------------

def probe_pickle(model: Any, sites: ConstructionSites) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Really pickle the model both ways; on failure, name every unpicklable object.

    Returns the probe (``ok``, each attempt, ``failures``) and a construct with
    ``StoredObjectFacts`` for each failure, for the MC1xx rules.
    """
    import torch

    result: dict[str, Any] = {"ok": True, "failures": []}
    for name, attempt in (("pickle_dumps", lambda: pickle.dumps(model)),
                          ("torch_save", lambda: torch.save(model, io.BytesIO()))):
        started = time.monotonic()
        try:
            attempt()
            result[name] = {"ok": True, "seconds": round(time.monotonic() - started, 3)}
        except Exception as exc:  # pickling failure of any kind is the finding
            result["ok"] = False
            result[name] = {"ok": False, "error": one_line(exc), "seconds": round(time.monotonic() - started, 3)}
    constructs: list[dict[str, Any]] = []
    if result["ok"]:
        return result, constructs
    found, result["walk_complete"] = find_unpicklable(model, sites)
    for failure, construct in found:
        result["failures"].append(failure)
        constructs.append(construct)
    if not found:  # pickle failed on something the walk does not model: say what pickle said
        error = result["pickle_dumps"].get("error") or result["torch_save"].get("error")
        result["failures"] = [{"path": ROOT_PATH, "type": _type_name(model), "kind": "unknown",
                               "defined_at": None, "error": error}]
    return result, constructs


def _importable(obj: Any) -> bool:
    """Can pickle save ``obj`` by reference (module + qualified name lookup gives it back)?"""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module_name = getattr(obj, "__module__", None)
    if not name or "<locals>" in name or "<lambda>" in name:
        return False
    if module_name is None:
        return isinstance(obj, types.BuiltinFunctionType)
    module = sys.modules.get(module_name)
    if module is None:
        return False
    found: Any = module
    for part in name.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def _kind_of_reference(obj: Any) -> str:
    if isinstance(obj, types.FunctionType) and obj.__name__ == "<lambda>":
        return "lambda"
    if isinstance(obj, type):
        return "local_class" if "<locals>" in obj.__qualname__ else "unpicklable"
    if isinstance(obj, types.FunctionType):
        return "local_function" if "<locals>" in obj.__qualname__ else "unpicklable"
    return "unpicklable"


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ in ("builtins", None) else f"{cls.__module__}.{cls.__qualname__}"


@dataclasses.dataclass
class _Visit:
    obj: Any
    path: str
    owner: Any  # the nearest enclosing nn.Module
    attribute: str | None  # the attribute of ``owner`` this object hangs under


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def find_unpicklable(
    model: Any, sites: ConstructionSites
) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], bool]:
    """Every object pickle cannot save, by attribute path, in module order (pickle's own walk).

    Returns ((failure, construct) pairs, complete); ``complete`` is False when the walk gave
    up on a huge graph.
    """
    import torch

    atomic = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.Tensor, torch.dtype,
              torch.device, torch.layout, torch.memory_format, type(Ellipsis), type(NotImplemented))
    failures: list[tuple[dict[str, Any], dict[str, Any]]] = []
    seen: set[int] = set()
    alive: list[Any] = []  # objects made by __reduce_ex__ must outlive the walk, or ids get reused
    stack = [_Visit(model, "", model, None)]
    while stack:
        visit = stack.pop()
        obj = visit.obj
        if isinstance(obj, atomic) or id(obj) in seen:
            continue
        seen.add(id(obj))
        alive.append(obj)
        if len(alive) > _MAX_WALK:
            return failures, False
        stack.extend(reversed(_walk_into(visit, sites, failures)))
    return failures, True


def _walk_into(visit: _Visit, sites: ConstructionSites,
               failures: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[_Visit]:
    """What pickle saves of one object, to walk next; what it cannot save goes to ``failures``."""
    import torch
    import torch.nn as nn

    obj = visit.obj
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) and not (
        isinstance(obj, types.BuiltinFunctionType) and not isinstance(getattr(obj, "__self__", None),
                                                                      (types.ModuleType, type(None)))
    ):
        if not _importable(obj):  # saved by reference: module and qualified name
            failures.append(_failure(obj, visit, _kind_of_reference(obj), sites))
        return []
    local_class = "<locals>" in type(obj).__qualname__
    if local_class:  # pickle saves the instance's class by name, and a local one has none
        failures.append(_failure(type(obj), visit, "local_class", sites, instance=obj))
    if isinstance(obj, torch.jit.ScriptModule):  # its C++ innards are one problem, not several
        failures.append(_failure(obj, visit, "unpicklable", sites,
                                 error="a TorchScript module cannot be pickled (torch.jit.save saves it)"))
        return []
    if isinstance(obj, nn.Module):
        if not local_class and not _importable(type(obj)):
            failures.append(_failure(obj, visit, "unpicklable", sites,
                                     error=f"class {type(obj).__qualname__} cannot be imported by name"))
        try:
            return _module_children(obj, visit)
        except Exception as exc:  # a module that refuses pickling in __getstate__ (ScriptModule)
            failures.append(_failure(obj, visit, "unpicklable", sites, error=one_line(exc)))
            return []
    children = _container_children(obj, visit)
    if children is not None:
        return children
    try:
        reducer = copyreg.dispatch_table.get(type(obj))
        reduced = reducer(obj) if reducer else obj.__reduce_ex__(2)
    except Exception as exc:  # the object refuses to be pickled
        failures.append(_failure(obj, visit, "unpicklable", sites, error=one_line(exc)))
        return []
    cls = _reconstructed_class(reduced)
    if cls is not None and not local_class and not _importable(cls):
        failures.append(_failure(obj, visit, "unpicklable", sites,
                                 error=f"class {cls.__qualname__} cannot be imported by name"))
    return _reduce_children(reduced, visit)


def _container_children(obj: Any, visit: _Visit) -> list[_Visit] | None:
    """The items of a container pickle saves item by item (plain list, tuple, set, dict, a partial,
    a bound method); None for any other object."""
    def at(value: Any, path: str) -> _Visit:
        return _Visit(value, path, visit.owner, visit.attribute)

    if type(obj) in (list, tuple, set, frozenset):
        return [at(v, f"{visit.path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict) and type(obj).__reduce_ex__ is dict.__reduce_ex__:
        return [at(v, f"{visit.path}[{k!r}]") for k, v in obj.items()]
    if isinstance(obj, functools.partial):
        return [at(obj.func, f"{visit.path}.func"),
                *(at(v, f"{visit.path}.args[{i}]") for i, v in enumerate(obj.args)),
                *(at(v, f"{visit.path}.keywords[{k!r}]") for k, v in obj.keywords.items())]
    if isinstance(obj, types.MethodType):
        return [at(obj.__self__, f"{visit.path}.__self__")]
    return None


def _module_children(module: Any, visit: _Visit) -> list[_Visit]:
    state = module.__getstate__() if hasattr(module, "__getstate__") else dict(vars(module))
    children: list[_Visit] = []
    for key, value in state.items():
        if key == "_modules":
            children += [_Visit(sub, _join(visit.path, name), sub, None) for name, sub in value.items()]
        elif key in ("_parameters", "_buffers"):
            continue  # tensors
        elif isinstance(value, dict) and key.endswith(("hooks", "_hooks_with_kwargs", "_hooks_always_called")):
            children += [_Visit(v, f"{_join(visit.path, key)}[{k!r}]", module, key) for k, v in value.items()]
        else:
            children.append(_Visit(value, _join(visit.path, key), module, key))
    return children


def _reconstructed_class(reduced: Any) -> type | None:
    """The class pickle saves by name for an object reduced through copyreg (``__newobj__``)."""
    constructors = (copyreg.__newobj__, copyreg._reconstructor, getattr(copyreg, "__newobj_ex__", None))
    if (isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[1] and isinstance(reduced[1][0], type)
            and reduced[0] in constructors):
        return reduced[1][0]
    return None


def _reduce_children(reduced: Any, visit: _Visit) -> list[_Visit]:
    if isinstance(reduced, str):
        return []
    parts = list(reduced) + [None] * (5 - len(reduced))
    func, args, state, list_items, dict_items = parts[:5]
    children: list[_Visit] = []
    if isinstance(func, types.FunctionType):
        children.append(_Visit(func, f"{visit.path}.__reduce__", visit.owner, visit.attribute))
    if func not in (copyreg.__newobj__, copyreg._reconstructor, getattr(copyreg, "__newobj_ex__", None)):
        children += [_Visit(a, f"{visit.path}.__reduce__[{i}]", visit.owner, visit.attribute)
                     for i, a in enumerate(args or ())]
    elif args:
        children += [_Visit(a, f"{visit.path}.__reduce__[{i}]", visit.owner, visit.attribute)
                     for i, a in enumerate(args[1:], 1) if not isinstance(a, type)]
    states = state if isinstance(state, tuple) and len(state) == 2 else (state,)
    for part in states:
        if isinstance(part, dict):
            children += [_Visit(v, _join(visit.path, str(k)), visit.owner, visit.attribute) for k, v in part.items()]
        elif part is not None:
            children.append(_Visit(part, f"{visit.path}.__getstate__()", visit.owner, visit.attribute))
    if list_items is not None:
        children += [_Visit(v, f"{visit.path}[{i}]", visit.owner, visit.attribute) for i, v in enumerate(list_items)]
    if dict_items is not None:
        children += [_Visit(v, f"{visit.path}[{k!r}]", visit.owner, visit.attribute) for k, v in dict_items]
    return children


def _failure(
    obj: Any, visit: _Visit, kind: str, sites: ConstructionSites, *, instance: Any = None, error: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One unpicklable object: the probe's failure entry and the construct for the MC1xx rules."""
    from modelcheck.rules.pickling import StoredObjectFacts

    site = _resource_site(obj, visit, sites) if kind == "unpicklable" else definition_site(obj)
    qualname = getattr(obj, "__qualname__", None)
    if kind in ("lambda", "local_function"):
        type_name = "function"
    elif kind == "local_class":
        type_name = qualname if instance is not None else "type"
    else:
        type_name = _type_name(obj)
    path = visit.path or ROOT_PATH
    facts = StoredObjectFacts(
        kind=kind, how=f"stored at {path}", certain=True,
        name=qualname if kind in ("local_function", "local_class") else None,
        captures_locals=bool(getattr(obj, "__closure__", None)),
        type_name=type_name if kind == "unpicklable" else None,
    )
    source = _source_line(site)
    failure = {
        "path": path, "type": type_name, "kind": kind, "name": qualname, "instance": instance is not None,
        "defined_at": _describe(site), "location": site, "source": source, "error": error,
        "constructed_at": sites.get(visit.owner),  # the line that built the module holding it
    }
    construct = {**encode_facts(facts), "origin": "stored", "module_path": _module_path_of(visit),
                 "location": site, "source": source}
    return failure, construct


def _module_path_of(visit: _Visit) -> str:
    """The module path of the owner: the attribute path minus what hangs below the module."""
    if visit.attribute is None:
        return visit.path or ROOT_PATH
    cut = visit.path.rfind("." + visit.attribute) if visit.path != visit.attribute else 0
    return visit.path[:cut] if cut > 0 else ROOT_PATH


def _resource_site(obj: Any, visit: _Visit, sites: ConstructionSites) -> dict[str, Any] | None:
    """Where a live resource comes from: a generator's function, else the ``self.x = ...`` line."""
    code = getattr(obj, "gi_code", None) or getattr(obj, "cr_code", None) or getattr(obj, "ag_code", None)
    if code is not None:
        return {"path": str(Path(code.co_filename).resolve()), "line": code.co_firstlineno, "column": 1}
    if visit.attribute is not None:
        for cls in type(visit.owner).__mro__:
            if cls.__module__.startswith("torch.") or cls is object:
                break
            site = _assignment_site(cls, visit.attribute)
            if site is not None:
                return site
    return sites.get(visit.owner)


def _assignment_site(cls: type, attribute: str) -> dict[str, Any] | None:
    import ast
    import textwrap

    try:
        lines, start = inspect.getsourcelines(cls)
        filename = str(Path(inspect.getsourcefile(cls) or "").resolve())
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return None
    indent = len(lines[0]) - len(lines[0].lstrip())
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for target in targets:
            if (isinstance(target, ast.Attribute) and target.attr == attribute
                    and isinstance(target.value, ast.Name) and target.value.id == "self"):
                return {"path": filename, "line": start + node.lineno - 1, "column": node.col_offset + indent + 1}
    return None


# ----- graph capture ------------------------------------------------------------------------------

def capture_apis() -> dict[Any, tuple[tuple[Any, str], ...]]:
    """The functions whose calls are traced, by identity → each (rule family, public name) about it,
    the owning family first and a fallback family after it."""
    import torch.nn.functional  # noqa: F401 - the functions most families name
    from modelcheck.rules import FAMILIES

    apis: dict[Any, tuple[tuple[Any, str], ...]] = {}
    for family in sorted(FAMILIES, key=lambda family: family.fallback):
        for name in sorted(family.call_apis):
            fn = resolve_api(name)
            if fn is not None and family not in (f for f, _ in apis.get(fn, ())):
                apis[fn] = (*apis.get(fn, ()), (family, name))
    return apis


def resolve_api(name: str) -> Any:
    """The object a public name denotes (``torch.nn.functional.pad``, ``torch.Tensor.pow`` — what a
    ``TorchFunctionMode`` receives for ``x.pow(2)`` and ``x ** 2``), from a module already
    imported; None when there is none (``torchvision.ops.nms`` in a model without torchvision)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        found: Any = sys.modules.get(".".join(parts[:cut]))
        if found is None:
            continue
        for attr in parts[cut:]:
            found = getattr(found, attr, None)
        return found
    return None


def _walk_to_user(frame: Any, functional_file: str, names: set[str]) -> tuple[Any, Any, str | None]:
    """From a torch call up to the user's frame: (that frame or None, the torch layer whose forward
    made the call or None, the public ``torch.nn.functional`` wrapper the call went through or None:
    ``F.upsample_bilinear(...)`` reaches the recorder as ``interpolate``)."""
    import torch.nn as nn

    via_module = wrapper = None
    while frame is not None and is_internal(frame.f_code.co_filename):
        code = frame.f_code
        if via_module is None and code.co_name == "forward" and code.co_argcount:
            owner = frame.f_locals.get(code.co_varnames[0])
            if isinstance(owner, nn.Module):
                via_module = owner
        if code.co_filename == functional_file and f"torch.nn.functional.{code.co_name}" in names:
            wrapper = f"torch.nn.functional.{code.co_name}"
        frame = frame.f_back
    return frame, via_module, wrapper


@dataclass
class CallLog:
    """What the recorder keeps of a forward: the calls a rule family is about, once per site and
    facts, at the user's line (or, for a layer whose facts come from its calls, at the layer's
    construction site). Plain Python: the ``TorchFunctionMode`` around it only feeds it."""

    apis: dict[Any, tuple[tuple[Any, str], ...]]  # function → each (rule family, public name), owner first
    paths: dict[int, str]  # id(module) → module path
    layer_sites: dict[str, dict[str, Any] | None]  # module path → construction site (``layer_calls``)
    functional_file: str
    tracing: bool = False
    calls: int = 0
    constructs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ops: dict[tuple[Any, ...], dict[str, Any]] = dataclasses.field(default_factory=dict)
    called_modules: set[str] = dataclasses.field(default_factory=set)
    errors: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = {name for pairs in self.apis.values() for _, name in pairs}

    def seen(self, func: Any, args: Any, kwargs: dict[str, Any], frame: Any) -> None:
        """One torch call of the forward (``frame``: its caller's)."""
        self.calls += 1
        try:
            found = self.apis.get(func, ())
        except TypeError:
            found = ()
        for index, (family, api) in enumerate(found):
            try:
                self.record(family, api, args, kwargs, frame, listed=index == 0)
            except Exception as exc:  # a capture bug must not fail the user's forward
                self.errors.append(one_line(exc))

    def record(self, family: Any, api: str, args: Any, kwargs: dict[str, Any], frame: Any, listed: bool = True) -> None:
        frame, via_module, wrapper = _walk_to_user(frame, self.functional_file, self.names)
        if via_module is not None:  # inside a torch layer: the module walk has its facts
            path = self.paths.get(id(via_module), "?")
            self.called_modules.add(path)
            if family.layer_calls and self.layer_sites.get(path):
                facts = family.call_facts(api, args, kwargs, self.tracing)
                layer = layer_api(via_module)
                if facts is not None and layer is not None:
                    facts = dataclasses.replace(facts, api=layer[1])
                    self.keep(layer[1], facts, self.layer_sites[path], path, listed=listed)
            return
        if frame is None:
            return
        if wrapper in family.call_apis:
            api = wrapper
        facts = family.call_facts(api, args, kwargs, self.tracing)
        if facts is not None:
            self.keep(api, facts, frame_site(frame), _enclosing_module_path(frame, self.paths), listed=listed)

    def keep(self, api: str, facts: Any, site: dict[str, Any], module_path: str, listed: bool = True) -> None:
        """One construct for the rules; ``listed``: also one op of the graph the report lists (a call
        several families read is listed once, as the first, its owner, saw it)."""
        encoded = encode_facts(facts)
        key = (api, site["path"], site["line"], site["column"], module_path, json.dumps(encoded, sort_keys=True))
        if key in self.ops:
            self.ops[key]["count"] += 1
            return
        self.ops[key] = {"op": api, "location": site, "module_path": module_path,
                         "args": encoded["facts"], "count": 1, "listed": listed}
        self.constructs.append({**encoded, "origin": "call", "module_path": module_path,
                                "location": site, "source": _source_line(site)})


def _make_recorder(walk: ModuleWalk, tracing: bool) -> Any:
    """A ``TorchFunctionMode`` that shows every torch call of the forward to a fresh :class:`CallLog`
    (its ``log``)."""
    import torch
    from torch.overrides import TorchFunctionMode

    log = CallLog(capture_apis(), walk.paths, walk.layer_sites, str(Path(torch.nn.functional.__file__).resolve()),
                  tracing=tracing)

    class Recorder(TorchFunctionMode):
        def __init__(self) -> None:
            super().__init__()
            self.log = log

        def __torch_function__(self, func: Any, types_: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            log.seen(func, args, kwargs, sys._getframe(1))
            return func(*args, **kwargs)

    return Recorder()


def _enclosing_module_path(frame: Any, paths: dict[int, str]) -> str:
    """The module path of the innermost module whose method is on the stack."""
    while frame is not None:
        code = frame.f_code
        if code.co_argcount:
            owner = frame.f_locals.get(code.co_varnames[0])
            if id(owner) in paths:
                return paths[id(owner)]
        frame = frame.f_back
    return ROOT_PATH


@contextlib.contextmanager
def _modules_run(model: Any) -> Iterator[set[str]]:
    """The paths of the modules called while the block runs (forward pre-hooks, removed after; a
    direct ``.forward()`` call shows in ``CallLog.called_modules`` instead)."""
    ran: set[str] = set()
    hooks = [module.register_forward_pre_hook(lambda _module, _args, path=path or ROOT_PATH: ran.add(path))
             for path, module in model.named_modules()]
    try:
        yield ran
    finally:
        for hook in hooks:
            hook.remove()


def capture_graph(model: Any, example: Any, walk: ModuleWalk) -> dict[str, Any]:
    """Run forward once under torch.jit.trace with the recorder; fall back to a plain forward.

    ``example`` is an :class:`~modelcheck.models.specs.ExampleInputs` (or one tensor): every tensor is a
    traced input, the other arguments (``mode="test"``) are bound as constants, the model staying
    the traced root so module paths do not change.
    """
    import torch

    if not isinstance(example, ExampleInputs):
        example = ExampleInputs((example,))
    recorder = _make_recorder(walk, tracing=True)
    graph: dict[str, Any] = {"method": "torch.jit.trace", "ok": True, "input_shapes": example.shapes()}
    if example.constants:
        graph["constants"] = {name: repr(value)[:80] for name, value in example.constants.items()}
    started = time.monotonic()
    with torch.no_grad(), warnings.catch_warnings(), _modules_run(model) as ran:
        warnings.simplefilter("ignore")
        try:
            with recorder, example.bound(model) as tensors:
                torch.jit.trace(model, tensors, check_trace=False, strict=False)
        except Exception as exc:  # tracing refused (outputs, control flow...): run it plainly
            graph["trace_error"] = one_line(exc)
            graph["method"] = "forward (no shape provenance)"
            recorder = _make_recorder(walk, tracing=False)
            with recorder:
                example.call(model)  # an exception here is the forward's own failure
    log = recorder.log
    graph["seconds"] = round(time.monotonic() - started, 3)
    graph["torch_calls"] = log.calls
    graph["ops"] = [{k: v for k, v in op.items() if k != "listed"} for op in log.ops.values() if op["listed"]]
    graph["modules_called"] = sorted(log.called_modules)
    graph["modules_run"] = sorted(ran | log.called_modules)
    if log.errors:
        graph["capture_errors"] = log.errors[:5]
    graph["constructs"] = log.constructs
    return graph


# ----- the job ------------------------------------------------------------------------------------

def check_single_input(model: Any, inputs: ExampleInputs | None = None) -> None:
    """Refuse a forward the example inputs cannot call (by default: one tensor).

    Raises :class:`~modelcheck.models.specs.MissingInputs` naming the inputs it lacks ("needs 2 inputs
    (image, mask); give --input-shape with 2 shapes ...") or the non-tensor arguments without a
    default; the forward stage reports those as ``needs_inputs``/``needs_arguments``.
    """
    import torch

    check_forward_inputs(model, inputs if inputs is not None else ExampleInputs((torch.zeros(1),)))


def _user_traceback(exc: BaseException, limit: int = 12) -> str:
    """The traceback's last lines, without modelcheck's own frames (the user's code is the story)."""
    own = tuple(d + os.sep for d in own_code_dirs())
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not str(Path(f.filename).resolve()).startswith(own)]
    lines = ["Traceback (most recent call last):", *"".join(traceback.format_list(frames)).rstrip().splitlines(),
             *"".join(traceback.format_exception_only(type(exc), exc)).rstrip().splitlines()]
    return "\n".join(lines[-limit:])


def _watch(crash_log: str | None, deadline: float | None) -> None:
    """Send faulthandler's stack dumps to ``crash_log``: on a hard crash, and just before the timeout.

    The parent reads the file to say where the model died or hung (the worker's stderr keeps
    only a tail, which for a deep forward is all torch frames).
    """
    if not crash_log:
        return
    import faulthandler

    log = open(crash_log, "w")  # noqa: SIM115 - must stay open until the process ends
    faulthandler.enable(file=log)
    if deadline is not None:
        remaining = deadline - time.time()
        margin = min(1.0, remaining * 0.1)
        if remaining - margin > 0:
            faulthandler.dump_traceback_later(remaining - margin, exit=False, file=log)


class _Progress:
    """Writes the partial result after each stage, so a timeout or crash still reports them."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None

    def save(self, result: dict[str, Any]) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, default=str))
        tmp.replace(self.path)


def _stages(result: dict[str, Any], progress: _Progress) -> Iterator[str]:
    """Mark each stage as reached (persisting what is known so far) before it runs."""
    from modelcheck.models import building

    for stage in ("import", "build", "walk", "pickle", "forward"):
        result["stage"] = stage
        result["build_notes"] = building.notes()  # skipped weights, in-memory ports, stubs
        progress.save(result)
        yield stage


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job ``inspect``. Payload: ``spec`` (ModelSpec JSON); optional ``progress`` (a file
    for the partial result after each stage), ``crash_log`` and ``deadline`` (wall-clock time the
    parent kills the job; the stack is dumped to ``crash_log`` just before).

    ``status`` is "ok" or "failed"; on failure ``stage`` names the first stage that raised
    ("import", "build", "walk", "pickle", "forward") with ``error`` and ``traceback``. When the
    forward needs inputs modelcheck was not given (a building block taking ``x, skip``), the
    result also has ``needs_inputs`` (every tensor input forward takes, when some are not given:
    ``["x", "skip"]``) and ``needs_arguments``
    (non-tensor ones without a default): not the model's failure, but a missing
    ``--input-shape A;B`` or ``--inputs``. ``input_shapes`` lists the shapes fed. Stages
    after a failed walk or pickle probe still run; nothing runs after a failed import or build.
    """
    spec = ModelSpec.from_json(payload["spec"])
    progress = _Progress(payload.get("progress"))
    _watch(payload.get("crash_log"), payload.get("deadline"))
    inspection = _Inspection(spec)
    result = inspection.result
    failed: str | None = None
    for stage in _reaching(_stages(result, progress), ReachedCode.from_env()):
        started = time.monotonic()
        try:
            inspection.step(stage)
        except BaseException as exc:  # user code may raise anything, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                raise
            if failed is None:
                failed = stage
                result.update(status="failed", error=one_line(exc), traceback=_user_traceback(exc))
                if isinstance(exc, MissingInputs):  # not the model's failure: modelcheck lacks its inputs
                    result.update(needs_inputs=exc.tensors, needs_arguments=exc.settings, traceback="")
            if stage in ("import", "build"):
                result["seconds"][stage] = round(time.monotonic() - started, 3)
                break
        result["seconds"][stage] = round(time.monotonic() - started, 3)
    result["stage"] = failed
    result["build_notes"], result["project_files"] = _building_notes()
    return result


class _Inspection:
    """One model through the ``inspect`` job's stages, each adding to ``result``."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.result: dict[str, Any] = {"spec": spec.text, "status": "ok", "stage": None, "constructs": [],
                                       "pickle": None, "graph": None, "parameters": None, "seconds": {}}
        self.sites = ConstructionSites()
        self.walk = ModuleWalk([], {}, {})
        self.obj: Any = None
        self.model: Any = None

    def step(self, stage: str) -> None:
        """Run one stage ("import", "build", "walk", "pickle", "forward"); raises what the user's code raises."""
        result, model = self.result, self.model
        if stage == "import":
            import torch  # noqa: F401 - torch's own import time is not the user's

            with self.sites:
                self.obj = load_object(self.spec)
        elif stage == "build":
            with self.sites:
                model = self.model = build_model(self.spec, self.obj)
            model.eval()
            result["model_type"] = f"{type(model).__module__}.{type(model).__qualname__}"
            result["parameters"] = sum(p.numel() for p in model.parameters())
        elif stage == "walk":
            self.walk = walk_modules(model, self.sites)
            result["constructs"].extend(self.walk.constructs)
            result["modules"] = len(self.walk.paths)
        elif stage == "pickle":
            result["pickle"], constructs = probe_pickle(model, self.sites)
            result["constructs"].extend(constructs)
        elif stage == "forward":
            inputs = make_inputs(self.spec, 0, model)
            result["input_shapes"] = inputs.shapes()
            check_single_input(model, inputs)
            graph = capture_graph(model, inputs, self.walk)
            result["constructs"].extend(graph.pop("constructs"))
            result["graph"] = graph
            mark_unrun_layers(result["constructs"], set(graph["modules_run"]))


def _building_notes() -> tuple[list[str], list[str]]:
    """How the model got built (skipped loads, ports, stubs) and the project files it imported."""
    from modelcheck.models import building

    return building.notes(), building.project_files()


# ----- reached code: which of the user's functions a model ran (for per-model verdicts) ----------

#: set by the audit job: the file the inspect job writes the reached code ranges to
REACHED_ENV = "MODELCHECK_REACHED"


class ReachedCode:
    """The user's functions that ran while the model was built and while its forward ran.

    ``sys.setprofile`` with a hook that only adds the frame's code object to a set on "call"
    events (no per-line tracing); afterwards each code object becomes a (file, first line, last
    line) range (module bodies left out). Only set by the audit job (``REACHED_ENV``); a plain
    ``modelcheck`` run pays nothing. Measured on torchvision's resnet50 (build, then the traced
    forward at 1x3x224x224; best of 12, a loaded 2-core machine): build 0.20 → 0.23 s, trace
    0.97 → 1.39 s, 208 code objects. The cost is the hook's Python call per event while torch's
    own Python runs (``setprofile`` also reports C calls); ``cProfile`` (a C hook) measured about
    the same, and ``sys.monitoring`` (3.12+), which could disable a code object after its first
    call, is not available on the supported 3.11.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.codes: set[types.CodeType] = set()
        self._previous: Any = None
        self._active = False

    @classmethod
    def from_env(cls) -> ReachedCode | None:
        path = os.environ.get(REACHED_ENV)
        return cls(path) if path else None

    def start(self) -> None:
        add = self.codes.add

        def hook(frame: types.FrameType, event: str, arg: Any) -> None:
            if event == "call":
                add(frame.f_code)

        self._previous = sys.getprofile()
        sys.setprofile(hook)
        self._active = True

    def stop(self) -> None:
        if self._active:
            sys.setprofile(self._previous)
            self._active = False

    def ranges(self) -> dict[str, list[list[int]]]:
        found: dict[str, list[list[int]]] = {}
        for code in self.codes:
            if not code.co_flags & inspect.CO_OPTIMIZED or code.co_filename.startswith("<"):
                continue  # module and class bodies: running one is not running its functions
                # (installed packages stay: the audited model may be one, torchvision.models)
            last = code.co_firstlineno
            for _, end, _, _ in code.co_positions():
                if end is not None and end > last:
                    last = end
            found.setdefault(str(Path(code.co_filename).resolve()), []).append([code.co_firstlineno, last])
        return {path: sorted(spans) for path, spans in sorted(found.items())}

    def save(self) -> None:
        with contextlib.suppress(OSError):
            Path(self.path).write_text(json.dumps({"ranges": self.ranges()}))


def _reaching(stages: Iterator[str], reached: ReachedCode | None) -> Iterator[str]:
    """The stages, with ``reached`` recording during "build" and "forward"; saved after the last."""
    for stage in stages:
        watching = reached is not None and stage in ("build", "forward")
        if watching:
            reached.start()
        try:
            yield stage
        finally:
            if watching:
                reached.stop()
    if reached is not None:
        reached.save()


def read_reached(path: str | Path) -> dict[str, list[tuple[int, int]]] | None:
    """The ranges :class:`ReachedCode` saved (file → (first, last) lines), or None if there are none."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    ranges = data.get("ranges") if isinstance(data, dict) else None
    if not isinstance(ranges, dict):
        return None
    return {str(file): [(int(a), int(b)) for a, b in spans] for file, spans in ranges.items()}
