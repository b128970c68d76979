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
import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from modelcheck.text import one_line  # re-exported: trace.job imports it from here

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
    #: the first input's shape; ``input_shapes`` holds every input's (one per forward input)
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
    #: where forward_kwargs alone came from, for a model built without arguments
    #: (``self.net(x, mode=1)`` at ``joint_solver.py:88``)
    forward_origin: str = ""
    #: build without downloaded or missing weights (loads skipped and noted); audits default to it
    weight_free: bool = True
    #: every input's shape, in forward's order (``--input-shape "1,3,64,64;1,1,64,64"``); empty
    #: means ``(input_shape,)``. Set both with :meth:`set_input_shapes` after construction.
    input_shapes: tuple[tuple[int, ...], ...] = ()
    #: ``module:make_inputs`` / ``path/file.py:make_inputs``: a callable of the user's giving the
    #: example inputs (see :func:`make_inputs`); wins over the shapes
    inputs: str | None = None

    def __post_init__(self) -> None:
        self.set_input_shapes(self.input_shapes or (self.input_shape,))

    def set_input_shapes(self, shapes: Any) -> None:
        self.input_shapes = tuple(tuple(int(d) for d in shape) for shape in shapes)
        self.input_shape = self.input_shapes[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text, "name": self.name, "path": self.path, "module": self.module,
            "kwargs": self.kwargs, "input_shape": list(self.input_shape),
            "input_shapes": [list(shape) for shape in self.input_shapes], "inputs": self.inputs,
            "dtype": self.dtype,
            "origin": self.origin, "args": self.args, "forward_kwargs": self.forward_kwargs,
            "args_origin": self.args_origin, "forward_origin": self.forward_origin, "weight_free": self.weight_free,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            text=data["text"], name=data["name"], path=data.get("path"), module=data.get("module"),
            kwargs=dict(data.get("kwargs") or {}), input_shapes=_shapes_from_json(data),
            dtype=data.get("dtype", "float32"), origin=data.get("origin", "command line"),
            args=list(data.get("args") or []), forward_kwargs=dict(data.get("forward_kwargs") or {}),
            args_origin=data.get("args_origin", ""), forward_origin=data.get("forward_origin", ""),
            weight_free=bool(data.get("weight_free", True)),
            inputs=data.get("inputs"),
        )


def _shapes_from_json(data: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    """``input_shapes`` when present; ``input_shape`` (one shape, or a list of shapes) otherwise, or
    when it disagrees with ``input_shapes[0]``: a writer that knows only ``input_shape`` changed it."""
    first, shapes = data.get("input_shape"), data.get("input_shapes")
    if first and isinstance(first[0], (list, tuple)):
        shapes, first = first, first[0]
    if shapes and (not first or list(shapes[0]) == list(first)):
        return tuple(tuple(shape) for shape in shapes)
    return (tuple(first or DEFAULT_SHAPE),)


def parse_spec(
    text: str,
    kwargs: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] = DEFAULT_SHAPE,
    dtype: str = "float32",
    *,
    base: Path | None = None,
    origin: str = "command line",
    input_shapes: tuple[tuple[int, ...], ...] | None = None,
    inputs: str | None = None,
) -> ModelSpec:
    """Parse ``file.py:Name`` or ``package.module:Name``; raise SpecError with a one-line reason.

    A relative file path is taken relative to ``base`` when given (pyproject entries are relative
    to the pyproject's folder). The file must exist; a dotted module is only checked for syntax
    here, since finding it would mean importing its packages. ``input_shapes`` (every input's
    shape) wins over ``input_shape``; ``inputs`` names the example-inputs callable (``--inputs``),
    checked the same way and resolved against ``base`` too.
    """
    spec = _parse_spec(text, kwargs, input_shape, dtype, base=base, origin=origin)
    if input_shapes:
        spec.set_input_shapes(input_shapes)
    if inputs:
        spec.inputs = parse_inputs(inputs, base=base)
    return spec


def parse_inputs(text: str, *, base: Path | None = None) -> str:
    """``--inputs`` as ``path:name`` (the path joined with ``base``) or ``module:name``; SpecError if bad."""
    try:
        found = _parse_spec(text, None, DEFAULT_SHAPE, "float32", base=base, origin="")
    except SpecError as exc:
        raise SpecError(str(exc).replace("model spec", "--inputs", 1).replace(":Name", ":make_inputs")) from None
    return f"{found.path or found.module}:{found.name}"


def _parse_spec(
    text: str,
    kwargs: dict[str, Any] | None,
    input_shape: tuple[int, ...],
    dtype: str,
    *,
    base: Path | None,
    origin: str,
) -> ModelSpec:
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
    from modelcheck.config import parse_shapes

    shapes = getattr(config, "input_shapes", None) or (config.input_shape,)
    inputs = getattr(config, "inputs", None)
    if model_specs:
        return [parse_spec(text, model_args, shapes[0], dtype, input_shapes=shapes, inputs=inputs)
                for text in model_specs]
    specs = []
    for entry in config.models:
        text = str(entry.get("spec", ""))
        unknown = set(entry) - {"spec", "input-shape", "inputs", "args", "dtype"}
        if unknown:
            raise SpecError(f"[tool.modelcheck.models] {text!r}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            own = parse_shapes(entry["input-shape"]) if "input-shape" in entry else shapes
        except ValueError as exc:
            raise SpecError(f"[tool.modelcheck.models] {text!r}: {exc}") from None
        specs.append(parse_spec(text, entry.get("args") or {}, own[0], str(entry.get("dtype", dtype)),
                                base=config.root, origin="pyproject", input_shapes=own,
                                inputs=str(entry["inputs"]) if "inputs" in entry else inputs))
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


_RELATIVE_LEVEL = re.compile(r"^[ \t]*from[ \t]+(\.+)", re.MULTILINE)


def package_name(path: Path) -> tuple[Path, str]:
    """(sys.path root, dotted name) for a file: inside a package, the name from the package root.

    A folder without ``__init__.py`` whose file still uses relative imports (``from .resnet import
    x`` in ``networks/poolnet.py``, run as ``networks.poolnet`` from the repo root) is a namespace
    package: it takes as many folders as the deepest relative import climbs, but never up to a
    filesystem root or the home directory (``/tmp/model.py`` with ``from .x import y`` stays
    ``model`` in ``/tmp``): that root would make every file outside site-packages the project's.
    """
    parts = [] if path.stem == "__init__" else [path.stem]
    root = path.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts.insert(0, root.name)
        root = root.parent
    if len(parts) == 1:
        try:
            levels = [len(dots) for dots in _RELATIVE_LEVEL.findall(path.read_text(errors="replace"))]
        except OSError:
            levels = []
        for _ in range(max(levels, default=0)):
            if not root.name.isidentifier() or top_folder(root) or top_folder(root.parent):
                break  # never up to (or out of) a filesystem root or the home directory
            parts.insert(0, root.name)
            root = root.parent
    return root, ".".join(parts)


def top_folder(folder: Path) -> bool:
    """A filesystem root or the user's home directory: no namespace package climbs to it."""
    if folder.parent == folder:
        return True
    try:
        return folder.resolve() == Path.home().resolve()
    except (RuntimeError, KeyError, OSError):  # no home directory to compare with
        return False


def load_module(spec: ModelSpec) -> ModuleType:
    """Import the spec's module the way its own code expects to be imported (child side only).

    A file's folder goes on ``sys.path`` so sibling imports (``from layers import Block``) work;
    a file inside a package (``__init__.py`` up the tree) is imported by its dotted name from the
    package root so relative imports work too. The module is registered in ``sys.modules`` under
    that name, which is also what ``pickle`` needs to find its classes and functions by name.
    """
    from modelcheck.models import building

    building.install(spec)  # weight-free loads, in-memory porting, stubs: before any user import
    if spec.module:
        return importlib.import_module(spec.module)
    assert spec.path is not None
    path = Path(spec.path).resolve()
    root, name = package_name(path)
    for folder in (str(root), str(path.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module = _import_first(_candidate_names(path, name), path)
    # None: the natural name is taken by another file (a user file called ``types.py``, or shadowed)
    return module if module is not None else _load_by_location(path)


def _candidate_names(path: Path, name: str) -> list[str]:
    """The names to import the file by: its dotted name, then (no relative import in it) its stem
    alone, since the package's ``__init__`` may fail where the file alone does not."""
    candidates = [name] if name and _IDENT.match(name) else []
    if "." in name and _IDENT.match(path.stem) and not _RELATIVE_IMPORT.search(path.read_text(errors="replace")):
        candidates.append(path.stem)
    return candidates


def _import_first(candidates: list[str], path: Path) -> ModuleType | None:
    """The first candidate that imports as ``path`` (one already in ``sys.modules`` included);
    None when each is taken by another file or not found. The user's error from the first
    candidate that raised one is raised once the last candidate fails too, or none succeeds."""
    package_error: BaseException | None = None
    for candidate in candidates:
        existing = sys.modules.get(candidate)
        if existing is not None:
            if _same_file(existing, path):
                return existing
            continue
        module, error = _try_import(candidate)
        if error is not None:
            package_error = package_error or error
            if candidate == candidates[-1]:
                raise package_error from None
        elif module is not None and _same_file(module, path):
            return module
    if package_error is not None:
        raise package_error
    return None


def _try_import(candidate: str) -> tuple[ModuleType | None, BaseException | None]:
    """(module, None), or (None, the user's error); (None, None) when the lookup of the name itself
    failed, not one of the user's imports."""
    try:
        return importlib.import_module(candidate), None
    except Exception as exc:
        parts = candidate.split(".")
        own = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if isinstance(exc, ModuleNotFoundError) and exc.name in own:
            return None, None
        return None, exc


def _same_file(module: ModuleType, path: Path) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and Path(file).resolve() == path


def _load_by_location(path: Path) -> ModuleType:
    """Fallback when the file's natural name is taken (e.g. a user file called ``types.py``)."""
    from modelcheck.models import building

    name = "modelcheck_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path, loader=building.source_loader(name, path))
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
    """An ``nn.Module`` from the spec's object: the instance itself, ``cls(*args, **kwargs)`` or
    ``factory(*args, **kwargs)``; ``{"$ref": "module:name"}`` arguments are resolved first (see
    :func:`resolve_args`). Weight loads the constructor asks for are skipped when ``spec.weight_free``
    (see :mod:`modelcheck.models.building`)."""
    import torch.nn as nn
    from modelcheck.models import building

    building.install(spec)
    if obj is None:
        obj = load_object(spec)
    building.check_built(spec, obj)
    if isinstance(obj, nn.Module):
        if spec.kwargs or spec.args:
            raise TypeError(f"{spec.name} is already an nn.Module instance; model arguments do not apply")
        return obj
    if not callable(obj):
        raise TypeError(f"{spec.name} is a {type(obj).__name__}, not an nn.Module, a class or a factory")
    args, kwargs = resolve_args(spec)
    model = obj(*args, **kwargs)
    building.check_built(spec, model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec.name}(...) returned {type(model).__name__}, not an nn.Module")
    return model


def make_input(spec: ModelSpec, seed: int = 0) -> Any:
    """A reproducible random input of the spec's (first) shape and dtype (integers for integer dtypes)."""
    return _random_tensors(spec, seed)[0]


def _random_tensors(spec: ModelSpec, seed: int) -> list[Any]:
    """One random tensor per shape, drawn in order from one generator (the first is ``make_input``'s)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, spec.dtype)
    if dtype.is_floating_point:
        return [torch.randn(shape, generator=generator).to(dtype) for shape in spec.input_shapes]
    return [torch.randint(0, 10, shape, generator=generator, dtype=dtype) for shape in spec.input_shapes]


class ExampleInputs:
    """What one forward call gets: positional and keyword values, tensors or not.

    Tensors are the graph's inputs (traced, exported, fed to the runtimes), in the order
    positional first, then keywords; every other value (``mode="test"``) is a constant the
    trace and the export bake in. :meth:`bound` makes ``model(*tensors)`` mean the full call.
    """

    def __init__(self, args: Any = (), kwargs: dict[str, Any] | None = None) -> None:
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        for where, value in [*((f"input {i + 1}", v) for i, v in enumerate(self.args)), *self.kwargs.items()]:
            if not _is_tensor(value) and _holds_tensor(value):
                raise TypeError(f"forward argument {where} is a {type(value).__name__} holding tensors; "
                                "give each tensor as an input of its own")

    @property
    def tensors(self) -> tuple[Any, ...]:
        return (*(v for v in self.args if _is_tensor(v)), *(v for v in self.kwargs.values() if _is_tensor(v)))

    @property
    def constants(self) -> dict[str, Any]:
        """The non-tensor values, by parameter name (``#2`` for the second positional one): for reports."""
        found = {f"#{i + 1}": v for i, v in enumerate(self.args) if not _is_tensor(v)}
        return {**found, **{k: v for k, v in self.kwargs.items() if not _is_tensor(v)}}

    @property
    def simple(self) -> bool:
        """Only positional tensors: ``model(*tensors)`` is the call itself."""
        return not self.kwargs and all(_is_tensor(v) for v in self.args)

    def shapes(self) -> list[list[int]]:
        return [list(t.shape) for t in self.tensors]

    def call(self, model: Any) -> Any:
        return model(*self.args, **self.kwargs)

    def with_tensors(self, tensors: Any) -> ExampleInputs:
        """The same call with other tensors in the tensors' places (constants kept)."""
        tensors = list(tensors)
        if len(tensors) != len(self.tensors):
            raise ValueError(f"{len(tensors)} tensor(s) for {len(self.tensors)} input(s)")
        feed = iter(tensors)
        args = [next(feed) if _is_tensor(v) else v for v in self.args]
        kwargs = {k: next(feed) if _is_tensor(v) else v for k, v in self.kwargs.items()}
        return ExampleInputs(args, kwargs)

    def names(self, model: Any = None) -> list[str]:
        """Graph input names: ``input`` for a single tensor; else forward's parameter names when
        every tensor has a distinct one that is no parameter/buffer name, else ``input_0``, ``input_1``…"""
        count = len(self.tensors)
        if count == 1:
            return ["input"]
        fallback = [f"input_{i}" for i in range(count)]
        params: list[str] = []
        if model is not None:
            try:
                params = [p.name for p in inspect.signature(model.forward).parameters.values()
                          if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            except (TypeError, ValueError):
                return fallback
        names = [params[i] if i < len(params) else "" for i, v in enumerate(self.args) if _is_tensor(v)]
        names += [k for k, v in self.kwargs.items() if _is_tensor(v)]
        taken: set[str] = set()
        if model is not None:
            taken = {name for name, _ in model.named_parameters()} | {name for name, _ in model.named_buffers()}
        if len(set(names)) != count or not all(n.isidentifier() and n not in taken for n in names):
            return fallback
        return names

    @contextlib.contextmanager
    def bound(self, model: Any) -> Iterator[tuple[Any, ...]]:
        """While active, ``model(*self.tensors)`` calls forward with every argument, constants
        included; yields the tensors. The model stays the root module (module paths and ONNX node
        names unchanged): only its instance attribute ``forward`` is set, and removed after."""
        if self.simple:
            yield self.tensors
            return
        original = model.forward
        slots = [("arg", i) for i, v in enumerate(self.args) if _is_tensor(v)]
        slots += [("kw", k) for k, v in self.kwargs.items() if _is_tensor(v)]
        args, kwargs = self.args, self.kwargs

        def forward(*tensors: Any) -> Any:
            call_args, call_kwargs = list(args), dict(kwargs)
            for (kind, key), tensor in zip(slots, tensors, strict=True):
                if kind == "arg":
                    call_args[key] = tensor
                else:
                    call_kwargs[key] = tensor
            return original(*call_args, **call_kwargs)

        had = "forward" in vars(model)
        model.forward = forward
        try:
            yield self.tensors
        finally:
            if had:
                model.forward = original
            else:
                del model.forward


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_is_tensor(v) or _holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_is_tensor(v) or _holds_tensor(v) for v in value.values())
    return False


def make_inputs(spec: ModelSpec, seed: int = 0, model: Any = None) -> ExampleInputs:
    """The example inputs of one forward call (child side only), reproducible for a seed.

    With ``spec.inputs`` (``--inputs``): the user's callable, called after ``torch.manual_seed(seed)``
    with the model when it takes a parameter (``make_inputs(model)``), else with none. It returns a
    tensor, a tuple/list (positional arguments) or a dict (keyword arguments); values that are not
    tensors are constants. Otherwise one random tensor per ``spec.input_shapes``, positional.
    Either way ``spec.forward_kwargs`` fill the non-tensor arguments not given yet (by name);
    forward's other parameters keep their defaults.
    """
    found = _call_inputs(spec, seed, model) if spec.inputs else ExampleInputs(_random_tensors(spec, seed))
    order = _positional_names(model)
    taken = set(found.kwargs) | set(order[: len(found.args)])
    kwargs = {**found.kwargs, **{k: v for k, v in spec.forward_kwargs.items() if k not in taken}}
    # keyword inputs in forward's order: the graph's inputs do not depend on a dict's order
    kwargs = dict(sorted(kwargs.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
    return ExampleInputs(found.args, kwargs)


def _positional_names(model: Any) -> list[str]:
    if model is None:
        return []
    try:
        return [p.name for p in inspect.signature(model.forward).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return []


def _call_inputs(spec: ModelSpec, seed: int, model: Any) -> ExampleInputs:
    import torch

    text = spec.inputs or ""
    where, _, name = text.rpartition(":")
    holder = ModelSpec(text, name, path=where if where.endswith(".py") or "/" in where else None,
                       module=None if where.endswith(".py") or "/" in where else where)
    fn = load_object(holder)
    if not callable(fn):
        raise TypeError(f"--inputs {text}: {type(fn).__name__} is not callable")
    try:
        takes_model = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                          for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        takes_model = False
    torch.manual_seed(seed)
    value = fn(model) if takes_model else fn()
    if isinstance(value, torch.Tensor):
        return ExampleInputs((value,))
    if isinstance(value, (tuple, list)):
        return ExampleInputs(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ExampleInputs((), value)
    raise TypeError(f"--inputs {text} returned {type(value).__name__}, not a tensor, "
                    "a tuple/list of inputs or a dict of keyword inputs")


#: parameter names that hold a setting, not data (``forward(self, x, mode)``)
_SETTING_NAME = re.compile(
    r"^(mode|phase|stage|task|split|flag|train|training|test|testing|eval|inference|return_\w+|is_\w+|"
    r"use_\w+|with_\w+|\w+_mode|\w+_type|\w+_flag|type|kind|verbose|debug|level|step|epoch|iter|idx|"
    r"index|name|key|out_(?:size|shape)|size|scale|shape)$",
    re.IGNORECASE,
)


def looks_like_tensor(parameter: inspect.Parameter) -> bool:
    """Is this forward parameter data (a tensor) rather than a setting? By annotation first
    (``Tensor`` yes; ``str``/``int``/``bool``/``float`` no), else by name (``mode``, ``phase``,
    ``is_training``, ``return_features`` are settings)."""
    annotation = parameter.annotation
    if annotation is not parameter.empty:
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
        text = str(text)
        if "Tensor" in text:
            return True
        if text.split("[")[0].split(".")[-1] in ("str", "int", "bool", "float", "Literal", "Optional") \
                and "Tensor" not in text:
            return False
    return not _SETTING_NAME.match(parameter.name)


class MissingInputs(TypeError):
    """forward needs arguments the example inputs do not give: ``tensors`` names every tensor
    input it takes when some are missing (give that many shapes or ``--inputs``), ``settings``
    the non-tensor arguments without a default that nothing gives."""

    def __init__(self, message: str, tensors: list[str], settings: list[str]) -> None:
        super().__init__(message)
        self.tensors, self.settings = tensors, settings


def check_forward_inputs(model: Any, inputs: ExampleInputs, spec: ModelSpec | None = None) -> None:
    """Raise :class:`MissingInputs` (or TypeError) when forward cannot take these inputs.

    Without this the forward's own TypeError ("missing 1 required positional argument") reads
    like a bug of the model, and the export stage after it like a gap in the rules. An unreadable
    signature checks nothing: the forward speaks for itself.
    """
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return
    cls = type(model).__name__
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    given = len(inputs.args)
    if given > len(positional) and not varargs:
        names = ", ".join(p.name for p in positional) or "none"
        raise TypeError(f"{cls}.forward takes {len(positional)} input(s) ({names}) but {given} were given "
                        f"(input shapes {_shapes_text(inputs)})")
    filled = {p.name for p in positional[:given]} | set(inputs.kwargs)
    missing = [p for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and p.name not in filled]
    if not missing:
        return
    tensors = [p.name for p in missing if looks_like_tensor(p)]
    settings = [p.name for p in missing if p.name not in tensors]
    if tensors:
        wanted = [p.name for p, value in zip(positional, inputs.args, strict=False) if _is_tensor(value)]
        wanted += [k for k, v in inputs.kwargs.items() if _is_tensor(v)] + tensors
        count = len(wanted)
        first = _shapes_text(inputs).split(";")[0] if inputs.tensors else "1,3,224,224"
        message = (f"{cls}.forward needs {count} inputs ({', '.join(wanted)}); give --input-shape with "
                   f"{count} shapes separated by ';' (like {';'.join([first] * count)}) "
                   "or --inputs module:make_inputs")
        if settings:
            message += f", and a value for {', '.join(settings)}"
        tensors = wanted
    else:
        message = (f"{cls}.forward needs a value for {', '.join(settings)} (not a tensor, no default): "
                   "give it with --inputs module:make_inputs returning a dict of keyword inputs")
    raise MissingInputs(message, tensors, settings)


def _shapes_text(inputs: ExampleInputs) -> str:
    return ";".join(",".join(str(d) for d in shape) for shape in inputs.shapes()) or "none"


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
    call: dict[str, Any] = field(default_factory=dict)  # args/kwargs/forward_kwargs/args_origin from a call site


def discover_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Child job: find the models in ``payload["files"]`` (display path → path) and pick roots.

    Returns ``{"picked": [{"spec", "kind"}], "skipped": [{"spec", "kind", "reason"}],
    "errors": [{"file", "error"}]}``. Every candidate is built here once to see what it
    contains; the inspect job builds the picked ones again in their own child. A class that
    needs arguments is built with those of its first fitting call site in the repository
    (``payload["repo"]``, else the files' common folder; :mod:`modelcheck.models.callsites`), and its
    picked entry carries ``args``, ``kwargs``, ``forward_kwargs`` and ``args_origin``.
    """
    import os

    import torch.nn as nn
    from modelcheck.models.callsites import RepoIndex

    candidates: list[_Candidate] = []
    errors: list[dict[str, str]] = []
    folders = [str(Path(file).resolve().parent) for file in payload["files"].values()]
    root = payload.get("repo") or (os.path.commonpath(folders) if folders else None)
    sites = RepoIndex(root) if root and Path(root) != Path(Path(root).anchor) else None
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
                candidates.append(_build_candidate(spec, "class", obj, class_verdict(obj), _call_site(sites, obj)))
            elif inspect.isfunction(obj) and obj.__module__ == module.__name__:
                if obj.__name__ == "<lambda>" or name.startswith("_"):
                    continue
                candidates.append(_build_candidate(spec, "factory", obj, factory_verdict(obj, module_classes)))
    _pick_roots(candidates)
    # picked entries built from a call site carry its arguments (``args``, ``kwargs``, ...)
    return {
        "picked": [{"spec": c.spec, "kind": c.kind, **c.call} for c in candidates if not c.reason],
        "skipped": [{"spec": c.spec, "kind": c.kind, "reason": c.reason} for c in candidates if c.reason],
        "errors": errors,
    }


def class_verdict(cls: type) -> str | None:
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


def _call_site(sites: Any, obj: Any) -> dict[str, Any]:
    """Arguments for a class that needs some, from the first call site in the repository whose
    arguments fit its signature (:mod:`modelcheck.models.callsites`, static); {} when there is none."""
    if sites is None or not isinstance(obj, type):
        return {}
    from modelcheck.models.callsites import fitting_call, forward_call

    try:
        found = sites.call_sites(inspect.getsourcefile(obj) or "", obj.__name__)
    except (OSError, TypeError, RecursionError, ValueError):
        return {}
    if not required_parameters(obj):  # built without arguments: the repo's call may still set forward's
        forward = forward_call(obj, found)
        return {"forward_kwargs": forward[0], "forward_origin": forward[1]} if forward else {}
    call = fitting_call(obj, found) or {}
    call.pop("site", None)
    return call


def _build_candidate(spec: str, kind: str, obj: Any, verdict: str | None,
                     call: dict[str, Any] | None = None) -> _Candidate:
    import torch.nn as nn

    constructed = bool(call) and "args" in (call or {})  # else the call site only sets forward's arguments
    if constructed and verdict is not None and verdict.startswith("needs argument(s)"):
        verdict = None  # built with the call site's arguments
    if verdict is not None:
        return _Candidate(spec, kind, reason=verdict)
    try:
        if constructed:
            holder = ModelSpec(spec, obj.__name__, args=call["args"], kwargs=call["kwargs"])
            args, kwargs = resolve_args(holder)
            built = obj(*args, **kwargs)
        else:
            built = obj()
    except BaseException as exc:  # user code may raise anything
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _Candidate(spec, kind, reason=f"building it without arguments failed: {one_line(exc)}")
    if not isinstance(built, nn.Module):
        return _Candidate(spec, kind, reason=f"returned {type(built).__name__}, not an nn.Module")
    return _Candidate(spec, kind, built, call=dict(call or {}))


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
SETUP_CALLS = re.compile(
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
            callee = dotted(node.value.func)
            if callee is None or not SETUP_CALLS.match(callee):
                return f"line {node.lineno} calls {callee or 'a function'}() at import time"
    return None


def dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def resolve_args(spec: ModelSpec) -> tuple[list[Any], dict[str, Any]]:
    """The constructor's positional and keyword arguments with every ``{"$ref": ...}`` replaced by
    the object it names (child side only: resolving imports the named module).

    ``{"$ref": "package.module:name"}`` imports the module; ``{"$ref": "/path/file.py:name"}``
    loads the file the way :func:`load_module` loads a spec's file (its folder on ``sys.path``,
    its package name when inside one), so ``Vgg(RCL_Module)`` gets the very class the model's
    own module sees. ``name`` may be dotted (``Config.default``). Nested lists and dicts are walked.
    """
    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$ref"}:
            return _load_ref(str(value["$ref"]))
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if isinstance(value, dict):
            return {key: resolve(item) for key, item in value.items()}
        return value

    return [resolve(arg) for arg in spec.args], {key: resolve(value) for key, value in spec.kwargs.items()}


def _load_ref(ref: str) -> Any:
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not _IDENT.match(name):
        raise SpecError(f"argument reference {ref!r} must look like path/to/file.py:name or package.module:name")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    holder = ModelSpec(ref, name, path=where if is_file else None, module=None if is_file else where)
    return load_object(holder)
