"""Benchmark: where the smoke test's tolerance lies between float noise and real export bugs.

    .venv/bin/python benchmarks/bench_tolerance.py

The smoke test says an output matches PyTorch when ``max|diff| <= atol + rtol * scale``, where
``scale`` is that output's max |PyTorch value| (``modelcheck.smoke.stages.comparison``). This
measures, in one run, what the default ``rtol`` must separate:

(a) models that are right: torchvision and timm backbones, random init (no weights are
    downloaded), input 1×3×224×224, exported as the caffe2 target does (TorchScript, opset 9,
    initializers as inputs) and as the onnx target does (opset 17), run in ONNX Runtime and (opset
    9) in the real Caffe2 where it runs them. Their largest difference relative to scale is noise;
(b) known real bugs: bilinear ``F.interpolate`` at opset 9 (ONNX Upsample has no half-pixel
    mode), a bilinear resize to a shape-derived size at opset 9 (the tiny models of
    docs/evidence.md and torchvision's DeepLabV3, whose head ends in one), and
    ``MaxPool2d(2, 2, ceil_mode=True)`` at opset 11, which Caffe2 runs as floor mode (the tiny
    model, and torchvision's GoogLeNet). Their smallest relative difference is the signal; a wrong
    shape counts as infinitely far.

Prints every measurement, the largest noise, the smallest bug, their geometric mean and the default
``RTOL``'s ratio to each side. Exit status 1 when the default is not at least ``MARGIN`` times above
the noise and below the bugs, or a right model mismatches, or a bug passes. Installs torchvision and
timm (``-c constraints.txt``) and onnxruntime when missing; without the Caffe2 runtime
(``modelcheck --install caffe2``, root) its runs are left out with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 3, 224, 224)
TINY_SHAPE = (1, 3, 33, 33)  # docs/evidence.md's tiny model: pool gives 16×16, ceil_mode 17×17
MARGIN = 3.0  # the default must clear each side by at least this factor


@dataclass(frozen=True)
class Case:
    """One model at one target: ``wrong`` names the runtimes that compute something else there."""

    name: str
    build: Callable[[], Any]
    target: str  # "caffe2" (ONNX Runtime + Caffe2) or "onnx" (ONNX Runtime)
    opset: int
    shape: tuple[int, ...] = SHAPE
    wrong: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measured:
    """One runtime's outputs against PyTorch eager for one case."""

    case: Case
    runtime: str
    status: str  # the default comparison's verdict, or "failed" when the runtime did not run it
    max_abs: float | None = None
    scale: float | None = None
    rel: float | None = None  # math.inf for a wrong shape
    detail: str = ""
    fixed: str = ""  # the verdict of the fixed tolerance this replaced (|diff| <= 1e-4 + 1e-3 |expected|)

    @property
    def wrong(self) -> bool:
        return self.runtime in self.case.wrong


def ensure_installed() -> None:
    """torchvision and timm at the project's pins, onnxruntime: installed when missing."""
    missing = [name for name in ("torchvision", "timm", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
                        *missing], check=True)


# ----------------------------------------------------------------------------- the models


def _torchvision(name: str, part: str | None = None, **kwargs: Any) -> Callable[[], Any]:
    """A torchvision model, random init; ``part`` keeps its backbone (``features``), ``-2`` drops pool+fc."""

    def build() -> Any:
        import torch.nn as nn
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=None, **kwargs)
        if part == "-2":
            return nn.Sequential(*list(model.children())[:-2])
        return getattr(model, part) if part else model
    return build


def _timm(name: str) -> Callable[[], Any]:
    """A timm backbone, random init: its feature map (no pooling, no classifier)."""

    def build() -> Any:
        import timm

        timm.layers.set_fused_attn(False)  # the TorchScript exporter has no opset-9 attention kernel
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    return build


def _segmentation(name: str) -> Callable[[], Any]:
    """A torchvision segmentation model returning its ``out`` map, which a bilinear resize to the
    input's size ends (opset 9: a known bug)."""

    def build() -> Any:
        import torch.nn as nn
        import torchvision.models.segmentation as seg

        class Out(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = getattr(seg, name)(weights=None, weights_backbone=None)

            def forward(self, x: Any) -> Any:
                return self.net(x)["out"]
        return Out()
    return build


def _seed() -> Any:
    """The project's seed example (examples/seed_model.py): bilinear upsampling in its decoder."""
    import importlib.util as util

    spec = util.spec_from_file_location("seed_model", ROOT / "examples" / "seed_model.py")
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SeedNet()


TINY = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Tiny(nn.Module):
    """docs/evidence.md's conv -> relu -> pool -> upsample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = {pool}
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)

    def forward(self, x):
        y = self.pool(torch.relu(self.conv(x)))
        return {up}
'''
#: ceil_mode's last row and column of windows, then a mean over the map: the same shape either way
CEIL_MEAN = "self.up(y).mean((2, 3))"


def _tiny(pool: str, up: str) -> Callable[[], Any]:
    def build() -> Any:
        scope: dict[str, Any] = {}
        exec(TINY.format(pool=pool, up=up), scope)  # our own fixed template
        return scope["Tiny"]()
    return build


def cases() -> list[Case]:
    """(a) right models at both targets, then (b) the known bugs."""
    right = {
        "torchvision resnet18": _torchvision("resnet18", "-2"),
        "torchvision resnet50": _torchvision("resnet50", "-2"),
        "torchvision mobilenet_v3_large": _torchvision("mobilenet_v3_large", "features"),
        "torchvision efficientnet_b0": _torchvision("efficientnet_b0", "features"),
        "torchvision densenet121": _torchvision("densenet121", "features"),
        "torchvision vgg11_bn": _torchvision("vgg11_bn", "features"),
        "timm resnet50d": _timm("resnet50d"),
        "timm convnext_tiny": _timm("convnext_tiny"),
        "timm regnety_008": _timm("regnety_008"),
        "timm vit_tiny_patch16_224": _timm("vit_tiny_patch16_224"),
    }
    found = [Case(name, build, target, opset) for name, build in right.items()
             for target, opset in (("caffe2", 9), ("onnx", 17))]
    plain, ceil = "nn.MaxPool2d(2, 2)", "nn.MaxPool2d(2, 2, ceil_mode=True)"
    found += [
        Case("torchvision deeplabv3_resnet50", _segmentation("deeplabv3_resnet50"), "onnx", 17),
        Case("torchvision lraspp_mobilenet_v3_large", _segmentation("lraspp_mobilenet_v3_large"), "onnx", 17),
        Case("tiny ConvTranspose2d", _tiny(plain, "self.up(y)"), "caffe2", 9, TINY_SHAPE),
        Case("tiny nearest scale 2", _tiny(plain, 'F.interpolate(y, scale_factor=2, mode="nearest")'),
             "caffe2", 9, TINY_SHAPE),
    ]
    both = ("onnxruntime", "caffe2")
    found += [
        Case("tiny bilinear scale 2", _tiny(plain, 'F.interpolate(y, scale_factor=2, mode="bilinear")'),
             "caffe2", 9, TINY_SHAPE, both),
        Case("tiny bilinear to x.size()", _tiny(plain, 'F.interpolate(y, size=x.size()[2:], mode="bilinear")'),
             "caffe2", 9, TINY_SHAPE, both),
        Case("seed example SeedNet (bilinear)", _seed, "caffe2", 9, SHAPE, both),
        Case("torchvision deeplabv3_resnet50", _segmentation("deeplabv3_resnet50"), "caffe2", 9, SHAPE, both),
        Case("torchvision lraspp_mobilenet_v3_large", _segmentation("lraspp_mobilenet_v3_large"), "caffe2", 9,
             SHAPE, both),
        Case("tiny MaxPool2d ceil_mode", _tiny(ceil, "self.up(y)"), "caffe2", 11, TINY_SHAPE, ("caffe2",)),
        Case("tiny MaxPool2d ceil_mode, then mean", _tiny(ceil, CEIL_MEAN), "caffe2", 11, TINY_SHAPE, ("caffe2",)),
    ]
    return found


# ----------------------------------------------------------------------------- the runs


def _flatten(value: Any) -> list[Any]:
    """A forward's tensors in order (dicts by insertion, tuples and lists in order) as numpy."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in _flatten(v)]
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flatten(v)]
    return [value.detach().cpu().numpy()]


def _export(case: Case, folder: Path) -> tuple[Path, dict[str, Any], list[Any]]:
    """Build (seed 0), export as the case's target does, and PyTorch eager's outputs."""
    import torch
    from modelcheck.targets import make_target

    torch.manual_seed(0)
    model = case.build().eval()
    x = torch.randn(case.shape, generator=torch.Generator().manual_seed(0))
    path = folder / "model.onnx"
    options = make_target(case.target, case.opset).profile.export_options
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=case.opset, input_names=["input"],
                          do_constant_folding=True, **dict(options))
        expected = _flatten(model(x))
    return path, {"input": x.numpy()}, expected


def _onnxruntime(path: Path, feeds: dict[str, Any]) -> list[Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


def _measure(case: Case, runtime: str, got: list[Any] | None, expected: list[Any], error: str = "") -> Measured:
    """The default comparison's verdict and numbers; a wrong shape is infinitely far."""
    from modelcheck.smoke.stages import comparison

    if got is None:
        return Measured(case, runtime, "failed", detail=error)
    done = comparison(got, expected)
    shape_wrong = len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=False))
    rel = math.inf if shape_wrong else done.max_rel
    return Measured(case, runtime, done.status, done.max_abs, done.scale, rel, done.detail,
                    "mismatch" if shape_wrong else _fixed_rule(got, expected))


def _fixed_rule(got: list[Any], expected: list[Any]) -> str:
    """What the element-wise ``atol 1e-4 + rtol 1e-3 * |expected|`` rule said (modelcheck before
    the scale-relative comparison): shown beside the new verdict, where the two disagree."""
    import numpy as np

    ok = all(np.allclose(g, e, rtol=1e-3, atol=1e-4, equal_nan=True) for g, e in zip(got, expected, strict=True))
    return "passed" if ok else "mismatch"


def run_case(case: Case, folder: Path, caffe2: bool) -> list[Measured]:
    """Export once, then each runtime of the case's target; a failure is a row, never an abort."""
    from modelcheck.runtimes.caffe2.run import run_onnx

    folder.mkdir(parents=True)
    try:
        path, feeds, expected = _export(case, folder)
    except Exception as exc:  # a zoo model the exporter refuses: reported, not counted
        return [Measured(case, "export", "failed", detail=str(exc).splitlines()[0][:200])]
    rows = []
    try:
        rows.append(_measure(case, "onnxruntime", _onnxruntime(path, feeds), expected))
    except Exception as exc:  # ORT refuses the file
        rows.append(_measure(case, "onnxruntime", None, expected, str(exc).splitlines()[0][:200]))
    if case.target == "caffe2" and caffe2:
        run = run_onnx(path, feeds, None, timeout=600)
        got = run.outputs if run.status == "passed" else None
        rows.append(_measure(case, "caffe2", got, expected, f"{run.status}: {run.detail}"[:200]))
    return rows


# ----------------------------------------------------------------------------- the verdict


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return "shape" if math.isinf(value) else f"{value:.2g}"


def _print_rows(rows: list[Measured]) -> None:
    print(f"\n{'model':40s} {'target':10s} {'runtime':12s} {'truth':6s} {'verdict':9s} "
          f"{'max abs':>8s} {'scale':>8s} {'rel':>8s}  fixed atol 1e-4")
    for row in rows:
        where = f"{row.case.target}@{row.case.opset}"
        print(f"{row.case.name:40s} {where:10s} {row.runtime:12s} {'wrong' if row.wrong else 'right':6s} "
              f"{row.status:9s} {_number(row.max_abs):>8s} {_number(row.scale):>8s} {_number(row.rel):>8s}"
              f"  {row.fixed}")
        if row.status == "failed":
            print(f"    did not run: {row.detail}")


def verdict(rows: list[Measured], rtol: float) -> bool:
    """Print the noise maximum, the bug minimum, the threshold between them; True when all is well."""
    ran = [row for row in rows if row.status != "failed" and row.rel is not None]
    noise = [row for row in ran if not row.wrong]
    bugs = [row for row in ran if row.wrong]
    if not noise or not bugs:
        print("\nnot enough runs to calibrate (no right model or no bug ran)")
        return False
    loud = max(noise, key=lambda row: row.rel or 0.0)
    finite = [row for row in bugs if row.rel is not None and not math.isinf(row.rel)]
    quiet = min(finite, key=lambda row: row.rel or 0.0) if finite else None
    noise_max = loud.rel or 0.0
    bug_min = quiet.rel if quiet and quiet.rel is not None else math.inf
    print(f"\nnoise: largest difference relative to scale over {len(noise)} right runs: {noise_max:.2g} "
          f"({loud.case.name}, {loud.case.target}@{loud.case.opset}, {loud.runtime})")
    if quiet:
        print(f"bugs: smallest relative difference over {len(bugs)} wrong runs: {bug_min:.2g} "
              f"({quiet.case.name}, {quiet.case.target}@{quiet.case.opset}, {quiet.runtime}); "
              f"{len(bugs) - len(finite)} of them a wrong shape")
    middle = math.sqrt(noise_max * bug_min) if quiet and noise_max > 0 else math.nan
    print(f"geometric mean of the two: {middle:.2g} (gap bug/noise {bug_min / max(noise_max, 1e-30):.3g}×)")
    print(f"default rtol {rtol:g}: {rtol / max(noise_max, 1e-30):.3g}× the largest noise, "
          f"{bug_min / rtol:.3g}× below the smallest bug (goal ≥ {MARGIN:g}× each side)")
    wolf = [row for row in noise if row.fixed == "mismatch"]
    print(f"the fixed atol 1e-4 rule called {len(wolf)} of {len(noise)} right runs a mismatch"
          + (f" ({', '.join(sorted({row.case.name for row in wolf}))})" if wolf else ""))
    cried = [row for row in noise if row.status != "passed"]
    missed = [row for row in bugs if row.status == "passed"]
    for row in cried:
        print(f"FALSE MISMATCH: {row.case.name} {row.case.target}@{row.case.opset} {row.runtime}: {row.detail}")
    for row in missed:
        print(f"MISSED BUG: {row.case.name} {row.case.target}@{row.case.opset} {row.runtime}: {row.detail}")
    return not cried and not missed and rtol >= MARGIN * noise_max and bug_min >= MARGIN * rtol


def main() -> int:
    ensure_installed()
    import torch
    from modelcheck.runtimes.caffe2.run import runtime_status
    from modelcheck.smoke.stages import RTOL

    torch.set_num_threads(2)
    status = runtime_status()
    if not status.installed:
        print(f"note: {status.reason}; the Caffe2 runs are left out")
    rows: list[Measured] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-tolerance-") as tmp:
        for index, case in enumerate(cases()):
            t0 = time.monotonic()
            rows += run_case(case, Path(tmp) / str(index), status.installed)
            print(f"[{index + 1}] {case.name} at {case.target}@{case.opset}: {time.monotonic() - t0:.1f} s", flush=True)
    _print_rows(rows)
    ok = verdict(rows, RTOL)
    print(f"\n{time.monotonic() - started:.0f} s in all; calibration {'holds' if ok else 'FAILS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    sys.exit(main())
