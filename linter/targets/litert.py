"""The ``litert`` target: the model as a ``.tflite`` file, run by Google's LiteRT interpreter.

Exported the way litert-torch's README does it: ``litert_torch.convert(model.eval(),
sample_args)`` (``torch.export`` underneath, then its own lowering to the TFLite flatbuffer)
and ``.export("model.tflite")``. The ``litert`` stage runs that file with
``ai_edge_litert.interpreter.Interpreter`` — the runtime an Android/iOS app embeds, with its
default XNNPACK delegate on — and compares every output with PyTorch eager.

Boundary, measured (litert-torch 0.10.0, ai-edge-litert 2.3.0): inputs and outputs keep
PyTorch's layout (NCHW in, NCHW out; the NHWC transposes stay inside the graph), inputs are
``args_0``, ``args_1``… in forward's order, and the subgraph's outputs come in the order PyTorch
flattens them (tuple order, dict insertion order) — unlike the signature's output list, which is
sorted by name (``output_10`` before ``output_2``). int64/float64 inputs become int32/float32
(litert-torch's ``enable_x64=False`` default), so feeds are cast to what the file declares.

Its own environment (``modelcheck --install litert``, :mod:`modelcheck.runtimes.envs`):
litert-torch 0.10.0 requires torch < 2.15 and brings jax, jaxlib, transformers and its MLIR
converter; it works with the pinned torch 2.13.0. Measured on this project's machine (2 shared
cores, pins from constraints-targets.txt): the environment is 2.15 GB (torch 2.13.0 CPU 0.75 GB,
jaxlib 0.35 GB, litert-converter 0.29 GB, transformers 0.13 GB, ai-edge-litert 0.06 GB; 76
distributions) and took 186 s to install; a second install returns in 0.7 s. A small model's
``export`` stage takes 8-25 s, most of it importing litert_torch; the conversion 1.5-5 s.
docs/targets/litert.md has the measurements. litert_torch, ai_edge_litert and torch are imported
only inside the functions, which run in that environment's smoke and doctor jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelcheck.runtimes.envs import doctor_of, installer, status_of
from modelcheck.smoke.stages import ExportContext, Outcome, StageContext, run_compared
from modelcheck.targets import Profile, Stage, TargetEnv

NAME = "litert"
MODEL_FILE = "model.tflite"
INSTALL = f"modelcheck --install {NAME}"
#: the signature litert_torch.convert gives the converted forward
SIGNATURE = "serving_default"


def export(ctx: ExportContext) -> Path:
    """``litert_torch.convert(model, sample_args).export(path)``; raises with the converter's error."""
    import litert_torch

    litert_torch.config.show_progress = False  # its progress lines would fill the job's stdout
    path = ctx.artifacts / MODEL_FILE
    with ctx.inputs.bound(ctx.model) as tensors:
        edge_model = litert_torch.convert(ctx.model, tuple(tensors))
    edge_model.export(str(path))
    return path


def run_file(path: Path, feeds: dict[str, Any]) -> list[Any]:
    """One run of the ``.tflite`` file in LiteRT's interpreter: the outputs in PyTorch's order.

    ``feeds`` are in forward's order; the i-th goes to the signature's ``args_i`` (an input the
    converter dropped because the graph never reads it is skipped), cast to the dtype the file
    declares. Outputs are read in the subgraph's order, which is PyTorch's flattening order.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    declared = interpreter.get_signature_runner(SIGNATURE).get_input_details()
    for position, value in enumerate(feeds.values()):
        detail = declared.get(f"args_{position}")
        if detail is not None:
            interpreter.set_tensor(detail["index"], _as_declared(np.asarray(value), detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(detail["index"]) for detail in interpreter.get_output_details()]


def _as_declared(value: Any, dtype: Any) -> Any:
    """A feed in the input's declared dtype when only its width differs (int64 → int32), as an app
    would feed it; any other difference is left for the interpreter to refuse."""
    import numpy as np

    wanted = np.dtype(dtype)
    return value.astype(wanted) if value.dtype != wanted and value.dtype.kind == wanted.kind else value


def run_litert(ctx: StageContext) -> Outcome:
    """The ``litert`` stage: the exported file in LiteRT's interpreter, compared with PyTorch."""
    return run_compared(ctx, NAME, run_file)


LITERT = Stage(NAME, "LiteRT", run_litert)

PROFILE = Profile(
    name=NAME,
    runtime="litert",
    runtime_label="LiteRT",
    default_opset=0,
    stages=(LITERT,),
    status=status_of(NAME),
    doctor=doctor_of(NAME),
    install=installer(NAME),
    install_hint=INSTALL,
    repair_hint=f"{INSTALL} (it repairs an incomplete environment)",
    exporters=("litert_torch",),
    onnx=False,
    export=export,
    export_label="litert_torch.convert",
    env=TargetEnv(("torch", "litert-torch", "ai-edge-litert", "numpy"), ("litert_torch", "ai_edge_litert.interpreter"),
                  "litert-torch"),
    run_file=run_file,
    artifacts=(MODEL_FILE,),
)
