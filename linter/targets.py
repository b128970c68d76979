"""Target profiles: where the model is going decides how bad a finding is."""

from __future__ import annotations

from dataclasses import dataclass

TARGET_NAMES = ("caffe2", "onnx")
DEFAULT_OPSET = {"caffe2": 9, "onnx": 17}
EXPORTERS = ("torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18


class TargetError(ValueError):
    """A target/opset/exporter combination that cannot be honoured."""


@dataclass(frozen=True)
class Target:
    """Exporter settings plus the runtime that must run the result.

    ``caffe2`` is the seed's path: TorchScript exporter, opset 9, initializers kept as inputs,
    checked by a real Caffe2 ONNX backend. ``onnx`` is checked by ONNX Runtime (CPU).
    """

    name: str
    opset: int
    exporter: str = "torchscript"

    @property
    def runtime(self) -> str:
        return "caffe2" if self.name == "caffe2" else "onnxruntime"

    @property
    def label(self) -> str:
        return f"{self.name} (opset {self.opset}, {self.exporter} exporter)"


def make_target(name: str = "caffe2", opset: int | None = None, exporter: str | None = None) -> Target:
    """Build a target, filling in the profile's defaults and refusing impossible combinations."""
    if name not in TARGET_NAMES:
        raise TargetError(f"unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)}")
    exporter = exporter or "torchscript"
    if exporter not in EXPORTERS:
        raise TargetError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if name == "caffe2" and exporter != "torchscript":
        raise TargetError("the caffe2 target needs the torchscript exporter (keep_initializers_as_inputs)")
    if opset is None:
        opset = max(DEFAULT_OPSET[name], DYNAMO_MIN_OPSET if exporter == "dynamo" else 0)
    if not 7 <= opset <= 23:
        raise TargetError(f"opset {opset} is outside what torch.onnx exports (7-23)")
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise TargetError(f"the dynamo exporter needs opset >= {DYNAMO_MIN_OPSET}, not {opset}")
    return Target(name, opset, exporter)
