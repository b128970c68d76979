"""Convert an ONNX model to Caffe2 and run it, inside the bullseye chroot.

This file runs under Debian bullseye's Python 3.9 with torch 1.7.1 (the last
Debian build that still ships Caffe2), NOT in modelcheck's own environment:
Python 3.9 syntax only, stdlib + numpy + caffe2 + onnx only, and it never
imports modelcheck.  The host (``modelcheck.caffe2_runtime``) copies it into a
private directory inside the chroot for every run and starts it as

    python3 -I caffe2_worker.py JOB_DIR

JOB_DIR holds ``job.json`` (model file, input names and .npy files).  The
worker writes, into the same directory:

- ``stage``: the stage it is in ("convert" or "run"), rewritten before each
  stage, so that the host can tell where a crash or a timeout happened;
- ``init_net.pb`` and ``predict_net.pb``: the two files a mobile app loads;
- ``out_<i>.npy``: one per graph output, in graph order;
- ``result.json``: status, stage, detail, timings, output names.

Caffe2 may abort or segfault on bad graphs: that kills this process, and the
host turns the signal into a "crashed" result.  Everything that raises is
caught here and reported as "failed".
"""

import json
import os
import sys
import time
import traceback

# onnx.utils.polish_model's passes (onnx <= 1.8), now provided by onnxoptimizer.
_POLISH_PASSES = [
    "eliminate_nop_transpose",
    "eliminate_nop_pad",
    "fuse_consecutive_transposes",
    "fuse_transpose_into_gemm",
]

# Test hook, for modelcheck's own tests of the crash path only: when this
# variable is set to "convert" or "run", the worker calls os.abort() at the start
# of that stage, so the host sees a real SIGABRT death.  Never set it otherwise.
_TEST_ABORT_ENV = "MODELCHECK_CAFFE2_WORKER_TEST_ABORT"


def _first_line(exc):
    """Return 'Type: first non-empty line of the message', for a one-line detail."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Caffe2 enforce messages start with "[enforce fail at file.cc:123] ..."
    line = lines[0] if lines else ""
    name = type(exc).__name__
    return f"{name}: {line}" if line else name


def _install_onnx_shims():
    """Make onnx >= 1.9 look like the onnx that caffe2's backend was written for.

    The backend does ``import onnx.optimizer`` and calls
    ``onnx.utils.polish_model``; both were removed from onnx in 1.9.
    """
    import onnx
    import onnx.checker
    import onnx.shape_inference
    import onnx.utils
    import onnxoptimizer

    sys.modules["onnx.optimizer"] = onnxoptimizer
    onnx.optimizer = onnxoptimizer

    def polish_model(model):
        onnx.checker.check_model(model)
        onnx.helper.strip_doc_string(model)
        model = onnx.shape_inference.infer_shapes(model)
        model = onnxoptimizer.optimize(model, _POLISH_PASSES)
        onnx.checker.check_model(model)
        return model

    onnx.utils.polish_model = polish_model
    return onnx


def _set_stage(job_dir, stage):
    """Record the current stage on disk, so the host knows it after a crash."""
    with open(os.path.join(job_dir, "stage"), "w") as f:
        f.write(stage)
    if os.environ.get(_TEST_ABORT_ENV) == stage:
        sys.stderr.write(f"caffe2_worker: {_TEST_ABORT_ENV}={stage}, aborting (test hook)\n")
        sys.stderr.flush()
        os.abort()


def _write_result(job_dir, result):
    """Write result.json atomically (the host treats a missing file as a failure)."""
    tmp = os.path.join(job_dir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


def _convert(job_dir, job, result):
    """ONNX -> (init_net, predict_net); returns them with the output names."""
    onnx = _install_onnx_shims()
    from caffe2.python.onnx.backend import Caffe2Backend

    model = onnx.load(os.path.join(job_dir, job["model"]))
    if model.ir_version > onnx.IR_VERSION:
        # onnx.helper on a new host stamps its own IR version; the chroot's
        # onnx 1.10 checker refuses anything newer than it knows, although old
        # opsets need nothing from the newer IR.
        note = f"ir_version {model.ir_version} lowered to {onnx.IR_VERSION}"
        result["notes"].append(f"{note} for onnx {onnx.__version__}")
        model.ir_version = onnx.IR_VERSION
    output_names = [o.name for o in model.graph.output]
    init_net, predict_net = Caffe2Backend.onnx_graph_to_caffe2_net(model)
    with open(os.path.join(job_dir, "init_net.pb"), "wb") as f:
        f.write(init_net.SerializeToString())
    with open(os.path.join(job_dir, "predict_net.pb"), "wb") as f:
        f.write(predict_net.SerializeToString())
    return init_net, predict_net, output_names


def _run(job_dir, job, init_net, predict_net, output_names):
    """Run the two nets the way a mobile predictor does; returns the outputs."""
    import numpy as np
    from caffe2.python import workspace

    workspace.ResetWorkspace()
    workspace.RunNetOnce(init_net)
    for item in job["inputs"]:
        workspace.FeedBlob(item["name"], np.load(os.path.join(job_dir, item["file"])))
    workspace.RunNetOnce(predict_net)
    return [workspace.FetchBlob(name) for name in output_names]


def main(argv):
    """Entry point: run one job and always leave a result.json unless killed."""
    if len(argv) != 2:
        sys.stderr.write("usage: caffe2_worker.py JOB_DIR\n")
        return 2
    job_dir = argv[1]
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    result = {
        "status": "failed",
        "stage": "convert",
        "detail": "",
        "convert_seconds": None,
        "run_seconds": None,
        "output_names": [],
        "outputs": [],
        "notes": [],
    }
    try:
        _set_stage(job_dir, "convert")
        t0 = time.perf_counter()
        init_net, predict_net, output_names = _convert(job_dir, job, result)
        result["convert_seconds"] = time.perf_counter() - t0
        result["output_names"] = output_names
        result["stage"] = "run"
        _set_stage(job_dir, "run")
        t0 = time.perf_counter()
        outputs = _run(job_dir, job, init_net, predict_net, output_names)
        result["run_seconds"] = time.perf_counter() - t0
        import numpy as np

        for i, value in enumerate(outputs):
            name = f"out_{i}.npy"
            np.save(os.path.join(job_dir, name), np.asarray(value))
            result["outputs"].append(name)
        result["status"] = "passed"
    except BaseException as exc:  # every failure becomes a result
        result["detail"] = _first_line(exc)
        result["traceback"] = traceback.format_exc()[-4000:]
    _write_result(job_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
