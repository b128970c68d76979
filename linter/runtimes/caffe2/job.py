"""Convert an ONNX model to Caffe2 and run it, inside the bullseye chroot.

This file runs under Debian bullseye's Python 3.9 with torch 1.7.1 (the last
Debian build that still ships Caffe2), NOT in modelcheck's own environment:
Python 3.9 syntax only, stdlib + numpy + caffe2 + onnx only, and it never
imports modelcheck.  The host (``modelcheck.runtimes.caffe2.run``) copies it into a
private directory inside the chroot for every run and starts it as

    python3 -I caffe2_job.py JOB_DIR

JOB_DIR holds ``job.json`` (model file, input names and .npy files).  The
worker writes, into the same directory:

- ``stage``: "<stage> <step>", rewritten before each step (stage is "convert"
  or "run"), so that the host can tell where a crash or a timeout happened;
- ``init_net.pb`` and ``predict_net.pb``: the two files a mobile app loads;
- ``out_<i>.npy``: one per graph output, in graph order;
- ``result.json``: status, stage, detail, timings, output names.

Caffe2 may abort or segfault on bad graphs: that kills this process, and the
host turns the signal into a "crashed" result (faulthandler prints the Python
line first).  Everything that raises is caught and reported as "failed".
"""

import faulthandler
import json
import os
import re
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


_C10_BOILERPLATE = "(Could this error message be improved?  If so, please report an enhancement request to PyTorch.)"


def _one_line(exc):
    """'Type: the informative line of the message', for a one-line detail.

    Caffe2's C++ converter says "ONNX conversion failed, encountered 1 errors:"
    first and the real reason after a dump of the node, on an "Exception:" line.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    name = type(exc).__name__
    if not lines:
        return name
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        reason = next((ln for ln in lines if ". Exception: " in ln), "")
        line = reason.split(". Exception: ", 1)[1] if reason else f"{line} {lines[1]}"
        op = re.search(r'op_type:\s*"([^"]+)"', str(exc))
        if op and op.group(1) not in line:
            line = f"{line} (ONNX op {op.group(1)})"
    # Run-time errors append the whole failing OperatorDef; keep just its type.
    if " (Error from operator:" in line:
        line = line.split(" (Error from operator:", 1)[0]
        op = re.search(r'Error from operator:.*?\btype: "([^"]+)"', str(exc), re.S)
        if op:
            line = f"{line} (Caffe2 op {op.group(1)})"
    line = " ".join(line.replace(_C10_BOILERPLATE, "").split())
    return f"{name}: {line}"


def _install_onnx_shims():
    """Make onnx >= 1.9 look like the onnx that caffe2's backend was written for.

    The backend does ``import onnx.optimizer`` and calls
    ``onnx.utils.polish_model``; both were removed from onnx in 1.9.
    """
    import onnx
    import onnx.checker
    import onnx.helper
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


class _Stages:
    """Writes "<stage> <step>" to JOB_DIR/stage, so the host knows it after a crash."""

    def __init__(self, job_dir):
        self.path = os.path.join(job_dir, "stage")
        self.stage = "convert"

    def __call__(self, stage, step):
        self.stage = stage
        with open(self.path, "w") as f:
            f.write(f"{stage} {step}")


def _write_result(job_dir, result):
    """Write result.json atomically (the host treats a missing file as a failure)."""
    tmp = os.path.join(job_dir, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, os.path.join(job_dir, "result.json"))


def _convert(job_dir, job, result, stages):
    """ONNX -> (init_net, predict_net), also written as .pb; returns them and output names."""
    import onnx
    from caffe2.python.onnx.backend import Caffe2Backend

    stages("convert", "onnx.load")
    model = onnx.load(os.path.join(job_dir, job["model"]))
    if model.ir_version > onnx.IR_VERSION:
        # onnx.helper on a new host stamps its own IR version; the chroot's
        # onnx 1.10 checker refuses anything newer than it knows, although old
        # opsets need nothing from the newer IR.
        note = f"ir_version {model.ir_version} lowered to {onnx.IR_VERSION}"
        result["notes"].append(f"{note} for onnx {onnx.__version__}")
        model.ir_version = onnx.IR_VERSION
    output_names = [o.name for o in model.graph.output]
    stages("convert", "Caffe2Backend.onnx_graph_to_caffe2_net")
    init_net, predict_net = Caffe2Backend.onnx_graph_to_caffe2_net(model)
    for name, net in (("init_net.pb", init_net), ("predict_net.pb", predict_net)):
        tmp = os.path.join(job_dir, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(net.SerializeToString())
        os.replace(tmp, os.path.join(job_dir, name))  # never a half-written net
    return init_net, predict_net, output_names


def _run(job_dir, job, init_net, predict_net, output_names, stages):
    """Run the two nets the way a mobile predictor does; returns the outputs."""
    import numpy as np
    from caffe2.python import workspace

    workspace.ResetWorkspace()
    stages("run", "RunNetOnce(init_net)")
    workspace.RunNetOnce(init_net)
    for item in job["inputs"]:
        stages("run", f"FeedBlob({item['name']})")
        workspace.FeedBlob(item["name"], np.load(os.path.join(job_dir, item["file"])))
    stages("run", "RunNetOnce(predict_net)")
    workspace.RunNetOnce(predict_net)
    stages("run", "FetchBlob")
    return [workspace.FetchBlob(name) for name in output_names]


def main(argv):
    """Entry point: run one job and always leave a result.json unless killed."""
    if len(argv) != 2:
        sys.stderr.write("usage: caffe2_job.py JOB_DIR\n")
        return 2
    faulthandler.enable()  # a segfault or abort still prints the Python stack
    job_dir = argv[1]
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    stages = _Stages(job_dir)
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
        t0 = time.perf_counter()
        stages("convert", "import caffe2.python.onnx.backend")
        _install_onnx_shims()
        import caffe2.python.onnx.backend  # noqa: F401 - timed apart from the conversion

        result["import_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        init_net, predict_net, output_names = _convert(job_dir, job, result, stages)
        result["convert_seconds"] = time.perf_counter() - t0
        result["output_names"] = output_names
        t0 = time.perf_counter()
        outputs = _run(job_dir, job, init_net, predict_net, output_names, stages)
        result["run_seconds"] = time.perf_counter() - t0
        import numpy as np

        for i, value in enumerate(outputs):
            name = f"out_{i}.npy"
            np.save(os.path.join(job_dir, name), np.asarray(value))
            result["outputs"].append(name)
        result["status"] = "passed"
    except BaseException as exc:  # every failure becomes a result
        result["detail"] = _one_line(exc)
        # To stderr as well, so the host's stderr_tail shows where it failed.
        traceback.print_exc()
        sys.stderr.flush()
    result["stage"] = stages.stage
    _write_result(job_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
