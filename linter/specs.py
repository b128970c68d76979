"""Model specs: which models the dynamic pass and the smoke test build, and how.

A spec names a model as ``path/to/file.py:Name`` or ``package.module:Name``; ``Name`` is a
module-level ``nn.Module`` instance (Lua-converted code defines ``resnext_101_32x4d =
nn.Sequential(...)``), an ``nn.Module`` class (built with ``--model-args`` or its defaults) or a
factory function. The parent only parses specs (plain data, no imports); loading and building
happen in child jobs (:func:`load_object`, :func:`build_model`, :func:`discover_job`), because
importing the user's code runs it.

Without ``--model`` (or ``[tool.modelcheck.models]``) the checked files are searched for models
in a child: module-level instances, argument-free ``nn.Module`` classes and factories that are
safe to call (see :func:`factory_verdict`). Of those, only *root* models are picked: a class
that appears as a sub-block inside another candidate (a ``Bottleneck`` inside ``ResNet``) is
skipped, and the report says which were picked, which skipped, and why.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")
DEFAULT_SHAPE = (1, 3, 224, 224)
_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.", re.MULTILINE)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


class SpecError(ValueError):
    """A model spec modelcheck cannot use; the message names the spec and the reason."""


@dataclass
class ModelSpec:
    """One model to build: where it lives, how to call it, what to feed it."""

    text: str  # as the user wrote it (or as discovery names it): the model's label in reports
    name: str  # attribute path inside the module, e.g. "Net" or "zoo.resnext101"
    path: str | None = None  # a file, as given (relative to the working directory or absolute)
    module: str | None = None  # or a dotted module name
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] = DEFAULT_SHAPE
    dtype: str = "float32"
    origin: str = "command line"  # "command line" | "pyproject" | "discovered"
    #: positional constructor arguments; JSON values, or ``{"$ref": "module:name"}`` /
    #: ``{"$ref": "path/to/file.py:name"}`` for an object importable from the project
    args: list[Any] = field(default_factory=list)
    #: values for ``forward``'s arguments that are not tensors (``mode="test"``), by name
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    #: where args/forward_kwargs came from (``test.py:42``), for the report's notes
    args_origin: str = ""
    #: build without downloaded or missing weights (loads skipped and noted); audits default to it
    weight_free: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text, "name": self.name, "path": self.path, "module": self.module,
            "kwargs": self.kwargs, "input_shape": list(self.input_shape), "dtype": self.dtype,
            "origin": self.origin, "args": self.args, "forward_kwargs": self.forward_kwargs,
            "args_origin": self.args_origin, "weight_free": self.weight_free,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            text=data["text"], name=data["name"], path=data.get("path"), module=data.get("module"),
            kwargs=dict(data.get("kwargs") or {}), input_shape=tuple(data.get("input_shape") or DEFAULT_SHAPE),
            dtype=data.get("dtype", "float32"), origin=data.get("origin", "command line"),
            args=list(data.get("args") or []), forward_kwargs=dict(data.get("forward_kwargs") or {}),
            args_origin=data.get("args_origin", ""), weight_free=bool(data.get("weight_free", True)),
        )


def parse_spec(
    text: str,
    kwargs: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] = DEFAULT_SHAPE,
    dtype: str = "float32",
    *,
    base: Path | None = None,
    origin: str = "command line",
) -> ModelSpec:
    """Parse ``file.py:Name`` or ``package.module:Name``; raise SpecError with a one-line reason.

    A relative file path is taken relative to ``base`` when given (pyproject entries are relative
    to the pyproject's folder). The file must exist; a dotted module is only checked for syntax
    here, since finding it would mean importing its packages.
    """
    where, sep, name = text.strip().rpartition(":")
    if not sep or not where or not name:
        raise SpecError(f"model spec {text!r} must look like path/to/file.py:Name or package.module:Name")
    if not _IDENT.match(name):
        raise SpecError(f"model spec {text!r}: {name!r} is not a Python name")
    if dtype not in DTYPES:
        raise SpecError(f"model spec {text!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise SpecError(f"model spec {text!r}: the model arguments must be a table of keyword arguments")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if base is not None and not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise SpecError(f"model spec {text!r}: {path}: no such file")
        return ModelSpec(text.strip(), name, path=str(path), kwargs=dict(kwargs or {}),
                         input_shape=tuple(input_shape), dtype=dtype, origin=origin)
    if not _IDENT.match(where):
        raise SpecError(f"model spec {text!r}: {where!r} is neither a .py file nor a dotted module name")
    return ModelSpec(text.strip(), name, module=where, kwargs=dict(kwargs or {}),
                     input_shape=tuple(input_shape), dtype=dtype, origin=origin)


def specs_from_config(
    model_specs: list[str],
    model_args: dict[str, Any],
    config: Any,
    dtype: str = "float32",
) -> list[ModelSpec]:
    """The specs of one run: ``--model`` flags if any, else ``[tool.modelcheck.models]``.

    A pyproject entry holds ``spec`` and optionally ``input-shape``, ``args`` (keyword arguments)
    and ``dtype``; unset values fall back to the run's.
    """
    from modelcheck.config import parse_shape

    if model_specs:
        return [parse_spec(text, model_args, config.input_shape, dtype) for text in model_specs]
    specs = []
    for entry in config.models:
        text = str(entry.get("spec", ""))
        unknown = set(entry) - {"spec", "input-shape", "args", "dtype"}
        if unknown:
            raise SpecError(f"[tool.modelcheck.models] {text!r}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            shape = parse_shape(entry["input-shape"]) if "input-shape" in entry else config.input_shape
        except ValueError as exc:
            raise SpecError(f"[tool.modelcheck.models] {text!r}: {exc}") from None
        specs.append(parse_spec(text, entry.get("args") or {}, shape, str(entry.get("dtype", dtype)),
                                base=config.root, origin="pyproject"))
    return specs


def spec_files(texts: list[str]) -> list[Path]:
    """The existing ``.py`` files named by specs, for the static pass: ``file.py:Name``, and for
    ``package.module:Name`` its file under the working directory (found by path, nothing imported)."""
    files = []
    for text in texts:
        where = text.strip().rpartition(":")[0]
        if where.endswith(".py"):
            candidates = [Path(where)]
        elif where and all(part.isidentifier() for part in where.split(".")):
            base = Path(*where.split("."))
            candidates = [base.with_suffix(".py"), base / "__init__.py"]
        else:
            candidates = []
        found = next((path for path in candidates if path.is_file()), None)
        if found is not None and found not in files:
            files.append(found)
    return files


# ----- child side: loading and building -----------------------------------------------------------


def _package_name(path: Path) -> tuple[Path, str]:
    """(sys.path root, dotted name) for a file: inside a package, the name from the package root."""
    parts = [] if path.stem == "__init__" else [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts.insert(0, root.name)
        root = root.parent
    return root, ".".join(parts)


def load_module(spec: ModelSpec) -> ModuleType:
    """Import the spec's module the way its own code expects to be imported (child side only).

    A file's folder goes on ``sys.path`` so sibling imports (``from layers import Block``) work;
    a file inside a package (``__init__.py`` up the tree) is imported by its dotted name from the
    package root so relative imports work too. The module is registered in ``sys.modules`` under
    that name, which is also what ``pickle`` needs to find its classes and functions by name.
    """
    if spec.module:
        return importlib.import_module(spec.module)
    assert spec.path is not None
    path = Path(spec.path).resolve()
    root, name = _package_name(path)
    for folder in (str(root), str(path.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    candidates = [name] if name and _IDENT.match(name) else []
    if "." in name and _IDENT.match(path.stem) and not _RELATIVE_IMPORT.search(path.read_text(errors="replace")):
        candidates.append(path.stem)  # the package's __init__ may fail where the file alone does not
    package_error: BaseException | None = None
    for candidate in candidates:
        existing = sys.modules.get(candidate)
        if existing is not None:
            if _same_file(existing, path):
                return existing
            continue
        parts = candidate.split(".")
        try:
            module = importlib.import_module(candidate)
        except Exception as exc:
            own = {".".join(parts[: i + 1]) for i in range(len(parts))}
            if isinstance(exc, ModuleNotFoundError) and exc.name in own:
                continue  # our own lookup failed, not one of the user's imports
            package_error = package_error or exc
            if candidate != candidates[-1]:
                continue
            raise package_error from None
        if _same_file(module, path):
            return module
    if package_error is not None:
        raise package_error
    # the natural name is taken by another file (a user file called ``types.py``, or shadowed)
    return _load_by_location(path)


def _same_file(module: ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and Path(file).resolve() == path


def _load_by_location(path: Path) -> ModuleType:
    """Fallback when the file's natural name is taken (e.g. a user file called ``types.py``)."""
    name = "modelcheck_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_object(spec: ModelSpec) -> Any:
    """The object ``spec.name`` names in its module (child side only)."""
    module = load_module(spec)
    obj: Any = module
    for part in spec.name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = spec.path or spec.module
            raise AttributeError(f"{where} has no attribute {spec.name!r}") from None
    return obj


def build_model(spec: ModelSpec, obj: Any = None) -> Any:
    """An ``nn.Module`` from the spec's object: the instance itself, ``cls(**kwargs)`` or ``factory(**kwargs)``."""
    import torch.nn as nn

    if obj is None:
        obj = load_object(spec)
    if isinstance(obj, nn.Module):
        if spec.kwargs:
            raise TypeError(f"{spec.name} is already an nn.Module instance; model arguments do not apply")
        return obj
    if not callable(obj):
        raise TypeError(f"{spec.name} is a {type(obj).__name__}, not an nn.Module, a class or a factory")
    model = obj(**spec.kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec.name}(...) returned {type(model).__name__}, not an nn.Module")
    return model


def make_input(spec: ModelSpec, seed: int = 0) -> Any:
    """A reproducible random input of the spec's shape and dtype (integers for integer dtypes)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.dtype)
    if dtype.is_floating_point:
        return torch.randn(spec.input_shape, generator=generator).to(dtype)
    return torch.randint(0, 10, spec.input_shape, generator=generator, dtype=dtype)


# ----- discovery (child side) ---------------------------------------------------------------------

#: a function is called during discovery only if its name looks like a model factory ...
_FACTORY_NAME = re.compile(
    r"model|net|backbone|encoder|decoder|resnext|vgg|arch|^[a-z]+\d{2,}", re.IGNORECASE
)
#: ... and not like something that runs, loads or writes
_ACTION_NAME = re.compile(
    r"^_|^(main|train|test|eval|evaluate|run|load|download|save|export|fit|predict|infer|inference|"
    r"convert|benchmark|demo|setup|parse)(_|$)", re.IGNORECASE
)
_WEIGHT_PARAMS = re.compile(r"pretrain|weights|checkpoint|ckpt|url|download|path|file", re.IGNORECASE)


def required_parameters(fn: Any) -> list[str] | None:
    """The parameters a call of ``fn`` must pass (no default, not ``*args``/``**kwargs``); None when
    its signature cannot be read (a builtin, an odd callable)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def factory_verdict(fn: Any, module_classes: dict[str, type]) -> str | None:
    """None when ``fn`` is safe to call during discovery, else why not.

    Calling an arbitrary function may train, download or write, so a function is called only
    if (a) every parameter has a default, (b) no default asks for pretrained weights or a file,
    and (c) it says it builds a model: annotated to return an ``nn.Module``, or named like a
    model factory (``resnet50``, ``build_model``, ``unet``) and not like an action (``train``,
    ``load_*``, ``main``). Everything else is skipped with that reason.
    """
    import torch.nn as nn

    required = required_parameters(fn)
    if required is None:
        return "its signature cannot be read"
    if required:
        return f"needs argument(s) {', '.join(required)}"
    for p in inspect.signature(fn).parameters.values():
        if _WEIGHT_PARAMS.search(p.name) and p.default not in (None, False, "", p.empty):
            return f"would load weights or files ({p.name}={p.default!r} by default)"
    returns = _return_annotation(fn, module_classes)
    if returns is not None:
        if isinstance(returns, type) and issubclass(returns, nn.Module):
            return None
        return f"annotated to return {getattr(returns, '__name__', returns)}, not an nn.Module"
    if _ACTION_NAME.search(fn.__name__):
        return "its name says it does something other than build a model"
    if not _FACTORY_NAME.search(fn.__name__):
        return "not annotated to return an nn.Module and not named like a model factory"
    return None


def _return_annotation(fn: Any, module_classes: dict[str, type]) -> Any:
    """The evaluated return annotation, or None when there is none (or it cannot be evaluated)."""
    annotation = inspect.signature(fn).return_annotation
    if annotation is inspect.Signature.empty:
        return None
    if isinstance(annotation, str):
        import typing

        try:
            annotation = typing.get_type_hints(fn).get("return", annotation)
        except Exception:  # an annotation naming something unimportable
            tail = annotation.strip("'\"").rsplit(".", 1)[-1]
            return module_classes.get(tail) or (__import__("torch").nn.Module if tail == "Module" else None)
    return annotation


def _top_level_names(path: Path) -> tuple[list[str], set[str]]:
    """Names defined at the top level of a file, in order, and those bound by assignment."""
    tree = ast.parse(path.read_text(encoding="utf-8-sig"), str(path))
    ordered: list[str] = []
    assigned: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            ordered.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        ordered.append(name.id)
                        assigned.add(name.id)
    seen: set[str] = set()
    return [n for n in ordered if not (n in seen or seen.add(n))], assigned


@dataclass
class _Candidate:
    spec: str
    kind: str  # "instance" | "class" | "factory"
    obj: Any = None  # the built module, when built
    reason: str = ""  # why skipped; empty when picked


def discover_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job: find the models in ``payload["files"]`` (display path → path) and pick roots.

    Returns ``{"picked": [{"spec", "kind"}], "skipped": [{"spec", "kind", "reason"}],
    "errors": [{"file", "error"}]}``. Every candidate is built here once to see what it
    contains; the inspect job builds the picked ones again in their own child.
    """
    import torch.nn as nn

    candidates: list[_Candidate] = []
    errors: list[dict[str, str]] = []
    for display, file in payload["files"].items():
        path = Path(file).resolve()
        try:
            ordered, assigned = _top_level_names(path)
            module = load_module(ModelSpec(f"{display}:_", "_", path=str(path)))
        except BaseException as exc:  # user code may raise anything at import
            if isinstance(exc, KeyboardInterrupt):
                raise
            errors.append({"file": display, "error": one_line(exc)})
            continue
        module_classes = {n: v for n, v in vars(module).items() if isinstance(v, type)}
        for name in ordered:
            obj = vars(module).get(name)
            spec = f"{display}:{name}"
            if isinstance(obj, nn.Module) and name in assigned:
                candidates.append(_Candidate(spec, "instance", obj))
            elif isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__:
                candidates.append(_build_candidate(spec, "class", obj, _class_verdict(obj)))
            elif inspect.isfunction(obj) and obj.__module__ == module.__name__:
                if obj.__name__ == "<lambda>" or name.startswith("_"):
                    continue
                candidates.append(_build_candidate(spec, "factory", obj, factory_verdict(obj, module_classes)))
    _pick_roots(candidates)
    return {
        "picked": [{"spec": c.spec, "kind": c.kind} for c in candidates if not c.reason],
        "skipped": [{"spec": c.spec, "kind": c.kind, "reason": c.reason} for c in candidates if c.reason],
        "errors": errors,
    }


def _class_verdict(cls: type) -> str | None:
    import torch.nn as nn

    if cls.forward is nn.Module.forward:
        return "defines no forward"
    if cls.__name__.startswith("_"):
        return "private class"
    if inspect.isabstract(cls):
        return "abstract class"
    required = required_parameters(cls)
    if required is None:
        return "its signature cannot be read"
    return f"needs argument(s) {', '.join(required)}" if required else None


def _build_candidate(spec: str, kind: str, obj: Any, verdict: str | None) -> _Candidate:
    import torch.nn as nn

    if verdict is not None:
        return _Candidate(spec, kind, reason=verdict)
    try:
        built = obj()
    except BaseException as exc:  # user code may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _Candidate(spec, kind, reason=f"building it without arguments failed: {one_line(exc)}")
    if not isinstance(built, nn.Module):
        return _Candidate(spec, kind, reason=f"returned {type(built).__name__}, not an nn.Module")
    return _Candidate(spec, kind, built)


def _pick_roots(candidates: list[_Candidate]) -> None:
    """Skip candidates that are parts or copies of other candidates, saying which and where.

    A part: the very object sits inside another candidate, or (for classes and factories) an
    instance of its class does. A copy: the same object, or the same architecture (class,
    submodule classes, parameter count); the first one in file order stays.
    """
    built = [c for c in candidates if not c.reason]
    info: dict[int, tuple[dict[int, str], dict[type, str], tuple[Any, ...]]] = {}
    for c in built:
        subs = [(p, m) for p, m in c.obj.named_modules() if m is not c.obj]
        architecture = (type(c.obj), tuple(type(m) for _, m in subs), sum(p.numel() for p in c.obj.parameters()))
        info[id(c)] = ({id(m): p for p, m in subs}, {type(m): p for p, m in reversed(subs)}, architecture)

    def relation(part: _Candidate, whole: _Candidate) -> tuple[str, str] | None:
        objects, classes, architecture = info[id(whole)]
        if part.obj is whole.obj:
            return "copy", f"the same model as {whole.spec}"
        if info[id(part)][2] == architecture:
            return "copy", f"the same architecture as {whole.spec}"
        if id(part.obj) in objects:
            return "part", f"a sub-block of {whole.spec} (at {objects[id(part.obj)]})"
        if part.kind != "instance" and type(part.obj) in classes:
            return "part", f"a sub-block of {whole.spec} (at {classes[type(part.obj)]})"
        return None

    for index, part in enumerate(built):
        for other, whole in enumerate(built):
            if whole is part or whole.reason:
                continue
            found = relation(part, whole)
            if found is None or (found[0] == "copy" and other > index):
                continue
            back = relation(whole, part)
            if found[0] == "part" and back is not None and back[0] == "part":
                continue  # each holds the other's class (recursive structures): keep both
            part.reason = found[1]
            break


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: what a report shows of an exception from user code."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def discovery_files(sources: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Which checked files discovery may import (parent side: reads text, imports nothing).

    Only files that mention ``torch.nn``/``nn.`` can define a model. Test files, ``setup.py``,
    ``conftest.py`` and ``__main__.py`` are never imported, and neither is a file that does work
    at import time (a top-level ``for``/``while``/``with`` or a bare call such as ``train()``),
    since importing it would run that work. Returns (display path → path, notes).
    """
    files: dict[str, str] = {}
    notes: list[str] = []
    for display, text in sources.items():
        name = Path(display).name
        if (name.startswith("test_") or name.endswith("_test.py") or name in ("setup.py", "conftest.py", "__main__.py")
                or not display.endswith(".py") or not re.search(r"\bnn\.|torch\.nn", text)):
            continue
        why = _runs_at_import(text)
        if why:
            notes.append(f"models: not importing {display} to look for models: {why}")
            continue
        files[display] = display
    return files, notes


#: top-level calls that set things up rather than run work; any other bare call blocks discovery
_SETUP_CALLS = re.compile(
    r"^(sys\.path\.|warnings\.|logging\.|print$|torch\.(manual_seed|set_|backends\.|hub\.set_dir)|"
    r"(np|numpy)\.random\.seed|random\.seed|os\.environ|matplotlib\.use|cv2\.set|"
    r"[A-Za-z_]\w*\.register)"
)


def _runs_at_import(text: str) -> str | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return "it does not parse"
    for node in tree.body:
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
            return f"line {node.lineno} runs a loop at import time"
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            callee = _dotted(node.value.func)
            if callee is None or not _SETUP_CALLS.match(callee):
                return f"line {node.lineno} calls {callee or 'a function'}() at import time"
    return None


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None
