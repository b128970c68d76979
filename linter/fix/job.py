"""Fix verification, child side: the ``verify_fix`` job (see :mod:`modelcheck.jobs.run`).

A fix is kept only if the fixed model is the original model. Two phases, each in a fresh
child, because both build the user's model from the files on disk:

``reference`` (before anything is written): build the original model with a fixed seed, save
its ``state_dict``, random inputs of the configured shapes (or ``--inputs``) and its outputs (eval mode) to the
work folder; record which source files the model loaded, whether ``torch.save(model)`` works,
its module tree, and the input shapes every pooling and upsampling call received (per source
line; the pooling fixer needs them where the padding depends on the input size).

``check`` (after the fix is written): build the fixed model, load the original ``state_dict``
with ``strict=True`` (same keys, same shapes: pretrained checkpoints still load), run the same
inputs, compare: bit-identical when every fix's ``Exactness`` allows it (by construction, or
bitwise), else within ``1e-6 * max(1, max|original|)``. Also reports whether ``torch.save(model)`` works now and
whether the module tree is unchanged. Checkpoints go through ``torch.load(weights_only=True)``.
With ``port_in_memory`` false (the parent's choice when MC4xx porting edits are checked), the
fixed files are imported as written, without the in-memory Python 3 porting the reference had:
a porting fix is proven only if the code on disk now builds on plain Python 3.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import Any

SEEDS = (0, 1)
REFERENCE_FILE = "reference.pt"


def run(payload: dict[str, Any]) -> dict[str, Any]:
    """Payload: ``phase`` ("reference" | "check"), ``spec`` (ModelSpec JSON), ``workdir``;
    for "check" also ``exactness`` (``Exactness.check``'s value: "bitwise" | "numeric"), ``tolerance`` and
    ``port_in_memory``
    (default true)."""
    if payload["phase"] == "reference":
        return reference(payload)
    return check(payload)


def _build(payload: dict[str, Any], record_shapes: bool = False) -> tuple[Any, Any, Any]:
    import torch
    from modelcheck.models import building
    from modelcheck.models.specs import ModelSpec, build_model
    from modelcheck.trace.job import ConstructionSites

    spec = ModelSpec.from_json(payload["spec"])
    if not payload.get("port_in_memory", True):
        building.install(spec)
        building.set_porting(False)  # before any user import: the files must build as written
    torch.manual_seed(0)
    with ConstructionSites() as sites:
        model = build_model(spec)
    model.eval()
    return spec, model, sites


def _forward(model: Any, example: Any) -> list[Any]:
    """Outputs of one forward call: ``example`` is an ``ExampleInputs`` (every input, constants
    included) or a single tensor."""
    import torch
    from modelcheck.models.specs import ExampleInputs
    from modelcheck.smoke.job import _flatten

    if not isinstance(example, ExampleInputs):
        example = ExampleInputs((example,))
    torch.manual_seed(0)  # a forward that draws random numbers draws the same ones both times
    with torch.no_grad():
        return [t.detach().clone() for t in _flatten(example.call(model))]


def _unported(exc: BaseException) -> str:
    """Why the fixed files do not build as written: the error and the user's line it came from."""
    import traceback

    from modelcheck.models import building

    where = ""
    if isinstance(exc, SyntaxError) and exc.filename and building.is_project_file(exc.filename):
        where = f" at {building.display(exc.filename)}:{exc.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if building.is_project_file(f.filename)]
        if frames:
            where = f" at {building.display(frames[-1].filename)}:{frames[-1].lineno}"
    first = " ".join(str(exc).split())[:200]
    return (f"the fixed files do not build as written on Python 3 (checked without in-memory porting): "
            f"{type(exc).__name__}: {first}{where} (a Python 3 porting blocker left unfixed?)")


def _pickles(model: Any) -> tuple[bool, str]:
    import torch

    try:
        torch.save(model, io.BytesIO())
    except Exception as exc:  # pickling user objects may raise anything
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return True, ""


def _tree(model: Any) -> list[list[str]]:
    return [[name, type(module).__qualname__] for name, module in model.named_modules()]


def _user_files() -> list[str]:
    from modelcheck.trace.job import is_internal

    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and file.endswith(".py") and not is_internal(file) and "site-packages" not in file:
            files.add(os.path.realpath(file))
    return sorted(files)


def reference(payload: dict[str, Any]) -> dict[str, Any]:
    """Build the original model; save what ``check`` compares against; report call shapes."""
    import torch
    from modelcheck.models.specs import make_inputs

    spec, model, sites = _build(payload)
    inputs = [make_inputs(spec, seed, model) for seed in SEEDS]
    shapes = ShapeRecorder(model, sites)
    with shapes:
        outputs = [_forward(model, example) for example in inputs]
    # the tensors only (weights_only loading); ``check`` takes the constants from the spec again
    torch.save({"state_dict": model.state_dict(), "inputs": [list(example.tensors) for example in inputs],
                "outputs": outputs}, Path(payload["workdir"]) / REFERENCE_FILE)
    pickles, pickle_error = _pickles(model)
    return {
        "files": _user_files(),
        "call_shapes": shapes.result(),
        "pickles": pickles,
        "pickle_error": pickle_error,
        "tree": _tree(model),
        "state_keys": list(model.state_dict().keys()),
    }


def check(payload: dict[str, Any]) -> dict[str, Any]:
    """Build the fixed model, load the original weights strictly, compare outputs."""
    import torch
    from modelcheck.fixers.base import Exactness
    from modelcheck.models.specs import make_inputs

    saved = torch.load(Path(payload["workdir"]) / REFERENCE_FILE, weights_only=True)
    if payload.get("port_in_memory", True):
        spec, model, _ = _build(payload)
    else:
        try:
            spec, model, _ = _build(payload)
        except Exception as exc:  # user code may raise anything; SyntaxError for a print statement
            return {"ok": False, "problems": [_unported(exc)]}
    problems: list[str] = []
    fresh = model.state_dict()
    keys = list(fresh.keys())
    # built with the same seed: a fix that does not touch construction gives the very same weights
    same_init = keys == list(saved["state_dict"].keys()) and all(
        torch.equal(fresh[key], saved["state_dict"][key]) for key in keys)
    try:
        model.load_state_dict(saved["state_dict"], strict=True)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:300]
        return {"ok": False, "problems": [f"the original state_dict does not load with strict=True: {first}"]}
    bitwise = Exactness(payload.get("exactness", Exactness.NUMERIC.value)) is Exactness.BITWISE
    tolerance = float(payload.get("tolerance", 1e-6))
    max_diff = 0.0
    identical = True
    for index, (tensors, expected) in enumerate(zip(saved["inputs"], saved["outputs"], strict=True)):
        try:  # the very tensors the original ran on, with the spec's constants (mode="test")
            got = _forward(model, make_inputs(spec, SEEDS[index], model).with_tensors(tensors))
        except Exception as exc:  # the fixed forward may fail in any way
            return {"ok": False, "problems": [f"the fixed model's forward fails: {type(exc).__name__}: {exc}"[:300]]}
        if len(got) != len(expected):
            problems.append(f"input {index}: {len(got)} outputs, the original has {len(expected)}")
            continue
        for number, (a, b) in enumerate(zip(got, expected, strict=True)):
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(f"input {index}, output {number}: {tuple(a.shape)} {a.dtype}, "
                                f"the original {tuple(b.shape)} {b.dtype}")
                continue
            same = torch.equal(a, b)
            if not same and a.is_floating_point():  # NaN where the original has NaN is the same
                same = bool(((a == b) | (a.isnan() & b.isnan())).all())
            identical = identical and same
            if same:
                continue
            if not a.is_floating_point():
                problems.append(f"input {index}, output {number}: values differ")
                continue
            diff = float((a.double() - b.double()).abs().nan_to_num(0.0).max())
            max_diff = max(max_diff, diff)
            bound = tolerance * max(1.0, float(b.double().abs().nan_to_num(0.0).max()))
            if bitwise:
                problems.append(f"input {index}, output {number}: not bit-identical (max abs diff {diff:.3g}), "
                                "and this fix must not change a single bit")
            elif diff > bound:
                problems.append(f"input {index}, output {number}: max abs diff {diff:.3g} > {bound:.3g}")
    pickles, pickle_error = _pickles(model)
    return {
        "ok": not problems,
        "problems": problems,
        "max_abs_diff": max_diff,
        "bit_identical": identical,
        "state_keys_identical": keys == list(saved["state_dict"].keys()),
        "same_init": same_init,
        "tree": _tree(model),
        "pickles": pickles,
        "pickle_error": pickle_error,
    }


class ShapeRecorder:
    """Input shapes of every pooling and upsampling call, by the user's source line.

    Layers (``nn.MaxPool2d``) are keyed by the line that constructed them, functional calls
    (``F.max_pool2d``) by the line that called them: the lines the static findings point at.
    """

    def __init__(self, model: Any, sites: Any) -> None:
        self.model, self.sites = model, sites
        self.shapes: dict[tuple[str, int], set[tuple[int, ...]]] = {}
        self.handles: list[Any] = []
        self.mode: Any = None

    def _add(self, site: dict[str, Any] | None, value: Any) -> None:
        import torch

        if site is None or not isinstance(value, torch.Tensor):
            return
        key = (os.path.realpath(site["path"]), int(site["line"]))
        self.shapes.setdefault(key, set()).add(tuple(int(d) for d in value.shape))

    def __enter__(self) -> ShapeRecorder:
        from modelcheck.trace.job import capture_apis, frame_site, is_internal, layer_api
        from torch.overrides import TorchFunctionMode

        for module in self.model.modules():
            if layer_api(module) is not None:
                site = self.sites.get(module)
                self.handles.append(module.register_forward_pre_hook(
                    lambda _m, args, site=site: self._add(site, args[0] if args else None)))
        apis = capture_apis()
        recorder = self

        class _Calls(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                try:
                    known = func in apis
                except TypeError:
                    known = False
                if known and args:
                    frame = sys._getframe(1)
                    while frame is not None and is_internal(frame.f_code.co_filename):
                        if frame.f_code.co_name == "forward" and "torch/nn/modules" in frame.f_code.co_filename:
                            frame = None  # inside a torch layer: its hook has the shape
                            break
                        frame = frame.f_back
                    if frame is not None:
                        recorder._add(frame_site(frame), args[0])
                return func(*args, **kwargs)

        self.mode = _Calls()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)
        for handle in self.handles:
            handle.remove()

    def result(self) -> list[list[Any]]:
        return [[path, line, sorted(list(shape) for shape in shapes)]
                for (path, line), shapes in sorted(self.shapes.items())]
