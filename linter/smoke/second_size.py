"""The ``second_size`` stage: is an export that is right at the traced size right at another size too?

Some exports are right for the traced input size only: ``ceil_mode`` pooling at opset 9 (the
exporter pads for that size), an upsampling to a size read from the input's shape before opset 11
(the size becomes a constant), the unsafe fixes (explicit sizes). A rule that says so
(``Rule.size_dependent``) makes the smoke test measure it, not just state it: the model is exported
once more with free spatial dimensions (TorchScript exporter, ``dynamic_axes`` on every dimension
after the second of each input), run by ONNX Runtime at a second input size, and compared with
PyTorch eager at that size. ONNX Runtime, not the target's own runtime: Caffe2's predictor takes
the shapes it was converted with, so there the question has no answer beyond the traced size.

The second size is each spatial dimension × 1.5 + 1 (another remainder for every stride), else
rounded up to a multiple of 32 (for models that need one); the first that PyTorch itself accepts.
Runs in the smoke child while the model is alive; torch-free at import.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from modelcheck.smoke.stages import Outcome, StageContext, comparison, failing_op, shape_text
from modelcheck.text import one_line

STAGE = "second_size"
FILE = "model_second_size.onnx"


def candidates(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Second sizes to try for one input shape: spatial dimensions (after N, C) changed, else none."""
    if len(shape) < 3:
        return []
    odd = (*shape[:2], *(d * 3 // 2 + 1 for d in shape[2:]))
    round32 = (*shape[:2], *(-(-(d * 3 // 2) // 32) * 32 for d in shape[2:]))
    return list(dict.fromkeys([odd, round32]))


def run(ctx: StageContext, model: Any, inputs: Any, options: dict[str, Any]) -> Outcome:
    """Export with free spatial sizes, run at a second size in ONNX Runtime, compare with PyTorch there."""
    t0 = time.monotonic()
    found = _second_inputs(model, inputs)
    if isinstance(found, str):
        return ctx.outcome(STAGE, "skipped", detail=found)
    second, expected = found
    names = inputs.names(model)
    path = ctx.artifacts / FILE
    try:
        _export_dynamic(model, inputs, names, path, ctx.target, options)
    except Exception as exc:  # the exporter refuses free sizes: the export is tied to the traced one
        return ctx.outcome(STAGE, "failed", time.monotonic() - t0,
                           f"export with free spatial sizes failed: {one_line(exc)}", op=failing_op(str(exc)))
    from modelcheck.targets.onnx import session_run

    feeds = {name: t.detach().cpu().numpy() for name, t in zip(names, second.tensors, strict=True)}
    at = ", ".join(shape_text(tuple(t.shape)) for t in second.tensors)
    traced = ", ".join(shape_text(tuple(t.shape)) for t in inputs.tensors)
    try:
        got = session_run(path, feeds, ctx.threads)
    except Exception as exc:  # a constant shape of the traced size no longer fits
        return ctx.outcome(STAGE, "failed", time.monotonic() - t0,
                           f"ONNX Runtime at {at} (traced {traced}): {one_line(exc)}")
    done = comparison(got, expected, ctx.atol, ctx.rtol)
    return ctx.outcome(STAGE, done.status, time.monotonic() - t0,
                       f"ONNX Runtime at {at} (traced {traced}): {done.detail}",
                       max_abs=done.max_abs, max_rel=done.max_rel, scale=done.scale)


def _second_inputs(model: Any, inputs: Any) -> tuple[Any, list[Any]] | str:
    """Inputs of a second size that PyTorch eager accepts, with its outputs; else why there are none."""
    import torch
    from modelcheck.smoke.job import SEED, flatten

    shapes = [tuple(t.shape) for t in inputs.tensors]
    options = [candidates(shape) for shape in shapes]
    if not any(options):
        return "no input has spatial dimensions to change"
    errors = []
    for index in range(max(len(o) for o in options)):
        new = [o[min(index, len(o) - 1)] if o else s for o, s in zip(options, shapes, strict=True)]
        generator = torch.Generator().manual_seed(SEED + 1)
        tensors = [torch.randn(shape, generator=generator, dtype=t.dtype) if t.is_floating_point() else t
                   for shape, t in zip(new, inputs.tensors, strict=True)]
        second = inputs.with_tensors(tensors)
        try:
            with torch.no_grad():
                return second, [t.detach().cpu().numpy() for t in flatten(second.call(model))]
        except Exception as exc:  # the model needs its traced size (a flatten into a fixed Linear)
            errors.append(f"{', '.join(shape_text(s) for s in new)}: {one_line(exc)}")
    return "PyTorch itself refuses a second size (" + "; ".join(errors) + ")"


def _export_dynamic(model: Any, inputs: Any, names: list[str], path: Path, target: dict[str, Any],
                    options: dict[str, Any]) -> None:
    """torch.onnx.export (TorchScript) with every spatial dimension of every input free."""
    import torch

    axes = {name: {i: f"{name}_{i}" for i in range(2, t.dim())} for name, t in zip(names, inputs.tensors, strict=True)
            if t.dim() >= 3}
    with warnings.catch_warnings(), inputs.bound(model) as tensors, torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tensors, str(path), dynamo=False, opset_version=target["opset"],
                          input_names=names, dynamic_axes=axes, do_constant_folding=True, **dict(options))
