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

``locate`` (after a fixed model's smoke test failed on a node no finding places): export the
fixed model as the smoke test did, keeping each ONNX node's source stack, and return the user's
line the failing node comes from, so the report can put an unpredicted failure at its own line.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path
from typing import Any

SEEDS = (0, 1)
REFERENCE_FILE = "reference.pt"


def run(payload: dict[str, Any]) -> Any:
    """Payload: ``phase`` ("reference" | "check" | "locate"), ``spec`` (ModelSpec JSON), ``workdir``;
    for "check" also ``exactness`` (``Exactness.check``'s value: "bitwise" | "numeric"), ``tolerance`` and
    ``port_in_memory`` (default true); for "locate" ``wanted`` (see :func:`locate`)."""
    if payload["phase"] == "reference":
        return reference(payload)
    if payload["phase"] == "locate":
        return locate(payload)
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
    from modelcheck.smoke.job import flatten

    if not isinstance(example, ExampleInputs):
        example = ExampleInputs((example,))
    torch.manual_seed(0)  # a forward that draws random numbers draws the same ones both times
    with torch.no_grad():
        return [t.detach().clone() for t in flatten(example.call(model))]


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

    saved = torch.load(Path(payload["workdir"]) / REFERENCE_FILE, weights_only=True)
    try:
        spec, model, _ = _build(payload)
    except Exception as exc:  # user code may raise anything; SyntaxError for a print statement
        if payload.get("port_in_memory", True):
            raise
        return {"ok": False, "problems": [_unported(exc)]}
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
    compared = _compare(model, spec, saved, bitwise=bitwise, tolerance=float(payload.get("tolerance", 1e-6)))
    if "fatal" in compared:
        return {"ok": False, "problems": [compared["fatal"]]}
    pickles, pickle_error = _pickles(model)
    return {
        "ok": not compared["problems"],
        **compared,
        "state_keys_identical": keys == list(saved["state_dict"].keys()),
        "same_init": same_init,
        "tree": _tree(model),
        "pickles": pickles,
        "pickle_error": pickle_error,
    }


def _compare(model: Any, spec: Any, saved: dict[str, Any], *, bitwise: bool, tolerance: float) -> dict[str, Any]:
    """The fixed model on the original's very inputs against the original's outputs: ``problems``,
    ``max_abs_diff`` and ``bit_identical``, or ``fatal`` when its forward fails."""
    from modelcheck.models.specs import make_inputs

    problems: list[str] = []
    max_diff, identical = 0.0, True
    for index, (tensors, expected) in enumerate(zip(saved["inputs"], saved["outputs"], strict=True)):
        try:  # the very tensors the original ran on, with the spec's constants (mode="test")
            got = _forward(model, make_inputs(spec, SEEDS[index], model).with_tensors(tensors))
        except Exception as exc:  # the fixed forward may fail in any way
            return {"fatal": f"the fixed model's forward fails: {type(exc).__name__}: {exc}"[:300]}
        if len(got) != len(expected):
            problems.append(f"input {index}: {len(got)} outputs, the original has {len(expected)}")
            continue
        for number, (a, b) in enumerate(zip(got, expected, strict=True)):
            problem, diff, same = _output_problem(a, b, bitwise=bitwise, tolerance=tolerance)
            max_diff, identical = max(max_diff, diff), identical and same
            if problem:
                problems.append(f"input {index}, output {number}: {problem}")
    return {"problems": problems, "max_abs_diff": max_diff, "bit_identical": identical}


def _output_problem(a: Any, b: Any, *, bitwise: bool, tolerance: float) -> tuple[str, float, bool]:
    """One output of the fixed model (``a``) against the original's (``b``): (what is wrong or '',
    max abs diff, bit-identical). NaN where the original has NaN is the same value."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{tuple(a.shape)} {a.dtype}, the original {tuple(b.shape)} {b.dtype}", 0.0, False
    same = torch.equal(a, b)
    if not same and a.is_floating_point():
        same = bool(((a == b) | (a.isnan() & b.isnan())).all())
    if same:
        return "", 0.0, True
    if not a.is_floating_point():
        return "values differ", 0.0, False
    diff = float((a.double() - b.double()).abs().nan_to_num(0.0).max())
    bound = tolerance * max(1.0, float(b.double().abs().nan_to_num(0.0).max()))
    if bitwise:
        return f"not bit-identical (max abs diff {diff:.3g}), and this fix must not change a single bit", diff, False
    return (f"max abs diff {diff:.3g} > {bound:.3g}" if diff > bound else ""), diff, False


#: one frame of the source stack the TorchScript exporter keeps per node: ``/src/net.py(27): forward``
_FRAME = re.compile(r"^(?P<file>.+)\((?P<line>\d+)\): \S+$")


def locate(payload: dict[str, Any]) -> list[dict[str, Any] | None]:
    """Where in the user's code the ONNX nodes a runtime failed on come from.

    Payload: ``spec``, ``workdir`` and ``wanted``, a list of ``{"target", "opset", "exporter", "op",
    "node"}``. The model is built from the files as they are and exported as the smoke test exports it
    for that target, but with each node's source stack kept (``verbose``); the wanted node (by its
    name, else the first node of its operator type, the first a runtime meets) gives its innermost
    frame in a project file: ``{"path", "line", "node"}``, or None where there is none.
    """
    from modelcheck.models.specs import make_inputs
    from modelcheck.smoke.job import onnx_export
    from modelcheck.targets import get_profile

    spec, model, _ = _build(payload)
    graphs: dict[str, Any] = {}
    found: list[dict[str, Any] | None] = []
    for wanted in payload["wanted"]:
        name = wanted["target"]
        if name not in graphs:
            path = Path(payload["workdir"]) / f"located-{name}.onnx"
            options = {**dict(get_profile(name).export_options), "verbose": True}
            try:
                onnx_export(model, make_inputs(spec, 0, model), path, wanted, options)
                graphs[name] = _onnx_nodes(path)
            except Exception:  # the export that passed in the smoke test may still fail here in any way
                graphs[name] = []
        found.append(_node_site(graphs[name], wanted.get("op"), wanted.get("node")))
    return found


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _node_site(nodes: list[Any], op: str | None, node: str | None) -> dict[str, Any] | None:
    """The innermost project-file frame of the named node, else of the first node of type ``op``."""
    from modelcheck.models import building

    match = next((n for n in nodes if node and n.name == node), None) or next(
        (n for n in nodes if op and n.op_type.lower() == op.lower()), None)
    if match is None:
        return None
    for line in match.doc_string.splitlines():
        frame = _FRAME.match(line.strip())
        if frame and building.is_project_file(frame["file"]):
            return {"path": building.display(frame["file"]), "line": int(frame["line"]), "node": match.name}
    return None


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
