"""The ``executorch`` target: ExecuTorch 1.4.1 with the XNNPACK delegate, as its documentation exports it.

Export (the ``export`` stage, :func:`export`): ``torch.export.export(model, inputs)`` (non-strict,
torch's default and what ExecuTorch's XNNPACK tutorial calls), then
``to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])`` and ``to_executorch()``,
written as ``model.pte``. What the partitioner handed to XNNPACK and what stays on ExecuTorch's
portable kernels is written to ``delegation.json`` and heads the ``executorch`` stage's detail
("XNNPACK runs 2 of 3 ops; portable: upsample_nearest2d"): a mismatch in a delegated op is
XNNPACK's, in a portable one the portable kernel's. The ``executorch`` stage runs the file with
``executorch.runtime`` (the Python bindings of the C++ runtime) and compares with PyTorch.

Environment: ExecuTorch 1.4.1 pins torch 2.13.0, and this project's own environment has torch
2.14.1 (torchvision 0.29.1 needs it), so the converter and the runtime live in an environment of
their own (:mod:`modelcheck.runtimes.envs`; ``modelcheck --install executorch``) and the smoke job
of this target runs there: the model is exported under torch 2.13.0, with no torchvision. Measured
on this project's 2-core machine (``time modelcheck --install executorch``, ``du -sh`` of the
environment): 2 min 44 s from nothing, 1.5 GB on disk (torch 754 MB, executorch 115 MB, the
rest its dependencies: scipy, pandas, scikit-learn, sympy, coremltools); a second install
(``test_install_is_idempotent``) installs nothing, only checks that the modules import there
(15 s: importing ``executorch.runtime`` imports the whole ``exir`` compiler).

Hazards measured (docs/targets/executorch.md): bilinear ``F.interpolate`` with a ``scale_factor``
whose output size is not input × scale is delegated to XNNPACK, which interpolates by the in/out
size ratio instead of the factor (off by 0.57 on a 17×17 input at 1.5; MC207).
"""

from __future__ import annotations

import json
import operator
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelcheck.runtimes.envs import doctor_of, installer, status_of
from modelcheck.smoke.stages import ExportContext, Outcome, StageContext, run_compared
from modelcheck.targets import Profile, Stage, TargetEnv

NAME = "executorch"
PTE = "model.pte"
#: which operators XNNPACK runs and which fall back to the portable kernels (written by :func:`export`)
DELEGATION = "delegation.json"
INSTALL = f"modelcheck --install {NAME}"


def export(ctx: ExportContext) -> Path:
    """torch.export → edge dialect lowered to XNNPACK → ``model.pte``; the delegation beside it."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with ctx.inputs.bound(ctx.model) as tensors:
        exported = torch.export.export(ctx.model, tuple(tensors))
    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    (ctx.artifacts / DELEGATION).write_text(json.dumps(delegation(edge.exported_program().graph_module), indent=2))
    path = ctx.artifacts / PTE
    path.write_bytes(edge.to_executorch().buffer)
    return path


def delegation(graph_module: Any) -> dict[str, Any]:
    """Operator counts of a lowered edge graph: ``xnnpack`` (inside the delegate) and ``portable`` (outside).

    The delegate's own ops are those of each ``lowered_module_*``'s original graph, as ExecuTorch's
    ``get_delegation_info`` reads them; ``getitem`` (tuple unpacking) is no operator.
    """
    xnnpack: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            subgraphs += 1
            xnnpack.update(_op_names(getattr(graph_module, node.name).original_module.graph))
    portable.update(name for name in _op_names(graph_module.graph) if name != "executorch_call_delegate")
    return {"subgraphs": subgraphs, "xnnpack": dict(sorted(xnnpack.items())),
            "portable": dict(sorted(portable.items()))}


def _op_names(graph: Any) -> list[str]:
    """``upsample_nearest2d`` for each operator call (``aten.upsample_nearest2d.vec``) of an FX graph."""
    names = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        name = getattr(node.target, "__name__", str(node.target))
        parts = name.split(".")
        names.append(parts[-2] if len(parts) == 3 else name)  # aten.op.overload → op
    return names


def delegation_note(folder: Path) -> str:
    """``XNNPACK runs 12 of 14 ops; portable: upsample_nearest2d, avg_pool2d`` from ``delegation.json``."""
    try:
        found = json.loads((folder / DELEGATION).read_text())
    except (OSError, ValueError):
        return ""
    xnnpack, portable = found.get("xnnpack", {}), found.get("portable", {})
    total = sum(xnnpack.values()) + sum(portable.values())
    note = f"XNNPACK runs {sum(xnnpack.values())} of {total} ops"
    return note + (f"; portable: {', '.join(portable)}" if portable else "; none on portable kernels")


def run_file(path: Path, feeds: dict[str, Any]) -> list[Any]:
    """One run of a ``.pte`` with ``executorch.runtime``: inputs in the feeds' order, outputs as numpy."""
    import numpy as np
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(Path(path)).load_method("forward")
    outputs = method.execute([torch.from_numpy(np.ascontiguousarray(value)) for value in feeds.values()])
    return [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]


def run_executorch(ctx: StageContext) -> Outcome:
    """The ``executorch`` stage: run and compare, the delegation first in its detail."""
    done = run_compared(ctx, NAME, run_file)
    note = delegation_note(ctx.artifacts)
    if note:
        done.stage = replace(done.stage, detail=f"{note}; {done.stage.detail}" if done.stage.detail else note)
    return done


EXECUTORCH = Stage(NAME, "ExecuTorch", run_executorch)

PROFILE = Profile(
    name=NAME,
    runtime=NAME,
    runtime_label="ExecuTorch (XNNPACK)",
    default_opset=0,
    stages=(EXECUTORCH,),
    status=status_of(NAME),
    doctor=doctor_of(NAME),
    install=installer(NAME),
    install_hint=INSTALL,
    repair_hint=f"{INSTALL} (it repairs an incomplete environment)",
    exporters=("torch.export",),
    exporter_reason="ExecuTorch takes a torch.export program",
    artifacts=(PTE, DELEGATION),
    onnx=False,
    export=export,
    export_label="torch.export + XNNPACK",
    env=TargetEnv(("torch", "executorch", "numpy"),
                  ("executorch.runtime", "executorch.backends.xnnpack.partition.xnnpack_partitioner"), "executorch"),
    run_file=run_file,
)
