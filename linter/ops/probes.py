"""One tiny probe model per operator a vision model can contain, with the argument variants that matter.

The table (:mod:`modelcheck.ops.table`) is only as good as what is probed: each probe isolates one
construct (``F.adaptive_avg_pool2d(x, 1)``, ``nn.MaxPool2d(2, ceil_mode=True)`` on an odd map) so a
failing cell names its cause. A probe records the torch API names it exercises (qualified, as the
rules spell them: ``torch.nn.AdaptiveAvgPool2d``, ``torch.nn.functional.adaptive_avg_pool2d``) and
the facts a rule can know about a call site (``global``, ``divides``, ``mode``), so a rule can find
the variant that matches what it sees. The catalogue was written from the TorchScript exporter's
symbolic registry (``torch.onnx`` ``symbolic_opset9``… — :func:`modelcheck.ops.job.symbolic_registry`
lists what is registered, the table records which registered ops no probe reaches) and from the
``torch.nn`` / ``torch.nn.functional`` surface vision backbones, necks and heads use.

Child side: imports torch (only :mod:`modelcheck.ops.job` imports this module). Keys are stable:
a key is what a rule or a test looks up, so renaming one is an interface change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: the default input: batch 1, 4 channels, 12×12 (even, so pools and strides divide)
X = (1, 4, 12, 12)
X_ODD = (1, 4, 13, 13)
X33 = (1, 3, 33, 33)
SEQ = (1, 5, 16)  # batch × tokens × features (ViT-style)

Builder = Callable[[], nn.Module]


@dataclass(frozen=True)
class Probe:
    """One construct to export and run. ``facts`` must match what a rule knows (hard), ``args`` are
    the call's literal arguments (a match on them breaks ties, a difference does not exclude)."""

    key: str
    apis: tuple[str, ...]
    build: Builder
    family: str
    shapes: tuple[tuple[int, ...], ...] = (X,)
    facts: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)
    positive: bool = False  # inputs drawn from [0.5, 2) (sqrt, log, pow of fractions)

    def meta(self) -> dict[str, Any]:
        """What the table stores about the probe (JSON)."""
        return {"key": self.key, "apis": list(self.apis), "family": self.family,
                "inputs": [list(s) for s in self.shapes], "facts": self.facts, "args": self.args}


class Fn(nn.Module):
    """A function of the inputs as a module: functional calls are exported through it."""

    def __init__(self, fn: Callable[..., Any], *children: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.children_ = nn.ModuleList(children)

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.fn(*xs)


def nn_(*names: str) -> tuple[str, ...]:
    return tuple(f"torch.nn.{n}" for n in names)


def f_(*names: str) -> tuple[str, ...]:
    return tuple(f"torch.nn.functional.{n}" for n in names)


def t_(*names: str) -> tuple[str, ...]:
    return tuple(f"torch.{n}" for n in names)


def m_(*names: str) -> tuple[str, ...]:
    return tuple(f"torch.Tensor.{n}" for n in names)


def fn(f: Callable[..., Any]) -> Builder:
    """A builder for a functional probe."""
    return lambda: Fn(f)


def _stats(module: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so a dropped norm cannot pass."""
    with torch.no_grad():
        for name in ("running_mean", "running_var", "weight", "bias"):
            value = getattr(module, name, None)
            if isinstance(value, torch.Tensor):
                value.copy_(torch.rand_like(value) + 0.5 if name in ("running_var", "weight")
                            else torch.randn_like(value) * 0.3)
    return module


# ------------------------------------------------------------------------------------ families


def _conv() -> list[Probe]:
    c1, c2, c3 = (*nn_("Conv1d"), *f_("conv1d"), *t_("conv1d")), (
        *nn_("Conv2d"), *f_("conv2d"), *t_("conv2d")), (*nn_("Conv3d"), *f_("conv3d"), *t_("conv3d"))
    base = {"groups": 1, "dilation": 1, "padding_mode": "zeros"}
    return [
        Probe("nn.Conv2d(kernel_size=3, padding=1)", c2, lambda: nn.Conv2d(4, 8, 3, padding=1), "conv",
              facts=base, args={"kernel_size": 3, "padding": 1}),
        Probe("nn.Conv2d(kernel_size=3, stride=2)", c2, lambda: nn.Conv2d(4, 8, 3, stride=2), "conv",
              facts=base, args={"kernel_size": 3, "stride": 2}),
        Probe("nn.Conv2d(kernel_size=1, bias=False)", c2, lambda: nn.Conv2d(4, 8, 1, bias=False), "conv",
              facts=base, args={"kernel_size": 1, "bias": False}),
        Probe("nn.Conv2d(kernel_size=(1, 3), padding=(0, 1))", c2, lambda: nn.Conv2d(4, 8, (1, 3), padding=(0, 1)),
              "conv", facts=base, args={"kernel_size": (1, 3), "padding": (0, 1)}),
        Probe("nn.Conv2d(kernel_size=3, groups=2)", c2, lambda: nn.Conv2d(4, 8, 3, padding=1, groups=2), "conv",
              facts={**base, "groups": 2}, args={"kernel_size": 3, "groups": 2}),
        Probe("nn.Conv2d(kernel_size=3, groups=in_channels) [depthwise]", c2,
              lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), "conv",
              facts={**base, "groups": "in_channels"}, args={"kernel_size": 3, "groups": 4}),
        Probe("nn.Conv2d(kernel_size=3, dilation=2, padding=2)", c2, lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2),
              "conv", facts={**base, "dilation": 2}, args={"kernel_size": 3, "dilation": 2, "padding": 2}),
        Probe("nn.Conv2d(kernel_size=3, padding='same')", c2, lambda: nn.Conv2d(4, 8, 3, padding="same"), "conv",
              facts={**base, "padding": "same"}, args={"kernel_size": 3, "padding": "same"}),
        Probe("nn.Conv2d(kernel_size=4, padding='same') [even kernel]", c2, lambda: nn.Conv2d(4, 8, 4, padding="same"),
              "conv", facts={**base, "padding": "same", "even_kernel": True},
              args={"kernel_size": 4, "padding": "same"}),
        *[Probe(f"nn.Conv2d(kernel_size=3, padding=1, padding_mode='{mode}')", c2,
                (lambda mode=mode: nn.Conv2d(4, 8, 3, padding=1, padding_mode=mode)), "conv",
                facts={**base, "padding_mode": mode}, args={"kernel_size": 3, "padding": 1})
          for mode in ("reflect", "replicate", "circular")],
        Probe("F.conv2d(weight=<graph input>)", (*f_("conv2d"), *t_("conv2d")),
              fn(lambda x, w: F.conv2d(x, w, padding=1)), "conv", shapes=(X, (8, 4, 3, 3)), facts={"weight": "input"}),
        Probe("nn.Conv1d(kernel_size=3, padding=1)", c1, lambda: nn.Conv1d(4, 8, 3, padding=1), "conv",
              shapes=((1, 4, 16),), facts=base),
        Probe("nn.Conv3d(kernel_size=3, padding=1)", c3, lambda: nn.Conv3d(4, 8, 3, padding=1), "conv",
              shapes=((1, 4, 6, 6, 6),), facts=base),
    ]


def _conv_transpose() -> list[Probe]:
    ct1, ct2 = (*nn_("ConvTranspose1d"), *f_("conv_transpose1d")), (*nn_("ConvTranspose2d"), *f_("conv_transpose2d"))
    ct3 = (*nn_("ConvTranspose3d"), *f_("conv_transpose3d"))
    base = {"groups": 1, "dilation": 1, "output_padding": 0}
    return [
        Probe("nn.ConvTranspose2d(kernel_size=2, stride=2)", ct2, lambda: nn.ConvTranspose2d(4, 8, 2, stride=2),
              "conv", facts=base, args={"kernel_size": 2, "stride": 2}),
        Probe("nn.ConvTranspose2d(kernel_size=4, stride=2, padding=1)", ct2,
              lambda: nn.ConvTranspose2d(4, 8, 4, stride=2, padding=1), "conv",
              facts=base, args={"kernel_size": 4, "stride": 2, "padding": 1}),
        Probe("nn.ConvTranspose2d(kernel_size=3, stride=2, padding=1, output_padding=1)", ct2,
              lambda: nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), "conv",
              facts={**base, "output_padding": 1}, args={"kernel_size": 3, "stride": 2, "padding": 1}),
        Probe("nn.ConvTranspose2d(kernel_size=2, stride=2, groups=2)", ct2,
              lambda: nn.ConvTranspose2d(4, 8, 2, stride=2, groups=2), "conv",
              facts={**base, "groups": 2}, args={"kernel_size": 2, "stride": 2}),
        Probe("nn.ConvTranspose2d(kernel_size=3, dilation=2)", ct2, lambda: nn.ConvTranspose2d(4, 8, 3, dilation=2),
              "conv", facts={**base, "dilation": 2}, args={"kernel_size": 3}),
        Probe("nn.ConvTranspose2d(kernel_size=2, stride=2, bias=False)", ct2,
              lambda: nn.ConvTranspose2d(4, 8, 2, stride=2, bias=False), "conv",
              facts=base, args={"kernel_size": 2, "stride": 2, "bias": False}),
        Probe("nn.ConvTranspose1d(kernel_size=2, stride=2)", ct1, lambda: nn.ConvTranspose1d(4, 8, 2, stride=2),
              "conv", shapes=((1, 4, 16),), facts=base),
        Probe("nn.ConvTranspose3d(kernel_size=2, stride=2)", ct3, lambda: nn.ConvTranspose3d(4, 8, 2, stride=2),
              "conv", shapes=((1, 4, 4, 4, 4),), facts=base),
        Probe("F.unfold(kernel_size=3, padding=1)", (*f_("unfold"), *nn_("Unfold")),
              fn(lambda x: F.unfold(x, 3, padding=1)), "conv"),
        Probe("F.fold(output_size=12, kernel_size=3, padding=1)", (*f_("fold"), *nn_("Fold")),
              fn(lambda x: F.fold(x, (12, 12), 3, padding=1)), "conv", shapes=((1, 36, 144),)),
    ]


def _max_pool() -> list[Probe]:
    m1, m2, m3 = ((*nn_(f"MaxPool{d}d"), *f_(f"max_pool{d}d"), *t_(f"max_pool{d}d")) for d in (1, 2, 3))
    base = {"ceil_mode": False, "dilation": 1, "return_indices": False}
    return [
        Probe("nn.MaxPool2d(kernel_size=2)", m2, lambda: nn.MaxPool2d(2), "pool", facts=base, args={"kernel_size": 2}),
        Probe("nn.MaxPool2d(kernel_size=3, stride=2, padding=1)", m2, lambda: nn.MaxPool2d(3, 2, 1), "pool",
              facts=base, args={"kernel_size": 3, "stride": 2, "padding": 1}),
        Probe("nn.MaxPool2d(kernel_size=5, stride=1, padding=2) [SPP]", m2, lambda: nn.MaxPool2d(5, 1, 2), "pool",
              facts=base, args={"kernel_size": 5, "stride": 1, "padding": 2}),
        Probe("nn.MaxPool2d(kernel_size=2, ceil_mode=True) on 13×13", m2, lambda: nn.MaxPool2d(2, ceil_mode=True),
              "pool", shapes=(X_ODD,), facts={**base, "ceil_mode": True}, args={"kernel_size": 2}),
        Probe("nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True) on 12×12", m2,
              lambda: nn.MaxPool2d(3, 2, ceil_mode=True), "pool", facts={**base, "ceil_mode": True},
              args={"kernel_size": 3, "stride": 2}),
        Probe("nn.MaxPool2d(kernel_size=3, stride=2, dilation=2)", m2, lambda: nn.MaxPool2d(3, 2, dilation=2), "pool",
              facts={**base, "dilation": 2}, args={"kernel_size": 3, "stride": 2}),
        Probe("nn.MaxPool2d(kernel_size=2, return_indices=True)", m2, lambda: nn.MaxPool2d(2, return_indices=True),
              "pool", facts={**base, "return_indices": True}, args={"kernel_size": 2}),
        Probe("F.max_unpool2d(kernel_size=2)", (*nn_("MaxUnpool2d"), *f_("max_unpool2d")),
              fn(lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2)), "pool"),
        Probe("nn.MaxPool1d(kernel_size=2)", m1, lambda: nn.MaxPool1d(2), "pool", shapes=((1, 4, 16),), facts=base),
        Probe("nn.MaxPool3d(kernel_size=2)", m3, lambda: nn.MaxPool3d(2), "pool", shapes=((1, 4, 4, 4, 4),),
              facts=base),
    ]


def _avg_pool() -> list[Probe]:
    a1, a2, a3 = ((*nn_(f"AvgPool{d}d"), *f_(f"avg_pool{d}d"), *t_(f"avg_pool{d}d")) for d in (1, 2, 3))
    base = {"ceil_mode": False, "count_include_pad": True, "padding": 0, "divisor_override": None}
    padded = {**base, "padding": "nonzero"}
    return [
        Probe("nn.AvgPool2d(kernel_size=2)", a2, lambda: nn.AvgPool2d(2), "pool", facts=base, args={"kernel_size": 2}),
        Probe("nn.AvgPool2d(kernel_size=3, stride=2, padding=1)", a2, lambda: nn.AvgPool2d(3, 2, 1), "pool",
              facts=padded, args={"kernel_size": 3, "stride": 2, "padding": 1}),
        Probe("nn.AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)", a2,
              lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), "pool",
              facts={**padded, "count_include_pad": False}, args={"kernel_size": 3, "stride": 2, "padding": 1}),
        Probe("nn.AvgPool2d(kernel_size=2, ceil_mode=True) on 13×13", a2, lambda: nn.AvgPool2d(2, ceil_mode=True),
              "pool", shapes=(X_ODD,), facts={**base, "ceil_mode": True}, args={"kernel_size": 2}),
        Probe("nn.AvgPool2d(kernel_size=3, stride=2, ceil_mode=True, count_include_pad=False) on 13×13", a2,
              lambda: nn.AvgPool2d(3, 2, ceil_mode=True, count_include_pad=False), "pool", shapes=(X_ODD,),
              facts={**base, "ceil_mode": True, "count_include_pad": False}, args={"kernel_size": 3, "stride": 2}),
        Probe("nn.AvgPool2d(kernel_size=2, divisor_override=3)", a2, lambda: nn.AvgPool2d(2, divisor_override=3),
              "pool", facts={**base, "divisor_override": 3}, args={"kernel_size": 2}),
        Probe("nn.AvgPool1d(kernel_size=2)", a1, lambda: nn.AvgPool1d(2), "pool", shapes=((1, 4, 16),), facts=base),
        Probe("nn.AvgPool3d(kernel_size=2)", a3, lambda: nn.AvgPool3d(2), "pool", shapes=((1, 4, 4, 4, 4),),
              facts=base),
        Probe("nn.LPPool2d(norm_type=2, kernel_size=2)", (*nn_("LPPool2d"), *f_("lp_pool2d")),
              lambda: nn.LPPool2d(2, 2), "pool", positive=True),
    ]


def _adaptive_pool() -> list[Probe]:
    """Adaptive pools: ``global`` (every output size 1) and ``divides`` (input size a multiple)."""
    probes = []
    for kind, short in (("Avg", "avg"), ("Max", "max")):
        a2 = (*nn_(f"Adaptive{kind}Pool2d"), *f_(f"adaptive_{short}_pool2d"))
        probes += [
            Probe(f"F.adaptive_{short}_pool2d(output_size=1)", a2,
                  fn(lambda x, s=short: getattr(F, f"adaptive_{s}_pool2d")(x, 1)), "pool",
                  facts={"global": True, "divides": True}, args={"output_size": 1}),
            Probe(f"F.adaptive_{short}_pool2d(output_size=2) on 12×12", a2,
                  fn(lambda x, s=short: getattr(F, f"adaptive_{s}_pool2d")(x, 2)), "pool",
                  facts={"global": False, "divides": True}, args={"output_size": 2, "input_size": 12}),
            Probe(f"F.adaptive_{short}_pool2d(output_size=5) on 33×33", a2,
                  fn(lambda x, s=short: getattr(F, f"adaptive_{s}_pool2d")(x, 5)), "pool", shapes=(X33,),
                  facts={"global": False, "divides": False}, args={"output_size": 5, "input_size": 33}),
            Probe(f"F.adaptive_{short}_pool1d(output_size=1)",
                  (*nn_(f"Adaptive{kind}Pool1d"), *f_(f"adaptive_{short}_pool1d"), *t_(f"adaptive_{short}_pool1d")),
                  fn(lambda x, s=short: getattr(F, f"adaptive_{s}_pool1d")(x, 1)), "pool", shapes=((1, 4, 16),),
                  facts={"global": True, "divides": True}, args={"output_size": 1}),
            Probe(f"F.adaptive_{short}_pool3d(output_size=1)",
                  (*nn_(f"Adaptive{kind}Pool3d"), *f_(f"adaptive_{short}_pool3d")),
                  fn(lambda x, s=short: getattr(F, f"adaptive_{s}_pool3d")(x, 1)), "pool", shapes=((1, 4, 4, 4, 4),),
                  facts={"global": True, "divides": True}, args={"output_size": 1}),
        ]
    a2 = (*nn_("AdaptiveAvgPool2d"), *f_("adaptive_avg_pool2d"))
    probes += [
        Probe("F.adaptive_avg_pool2d(output_size=7) on 14×14", a2, fn(lambda x: F.adaptive_avg_pool2d(x, 7)), "pool",
              shapes=((1, 4, 14, 14),), facts={"global": False, "divides": True},
              args={"output_size": 7, "input_size": 14}),
        Probe("F.adaptive_avg_pool2d(output_size=(1, None))", a2, fn(lambda x: F.adaptive_avg_pool2d(x, (1, None))),
              "pool", facts={"global": False, "divides": True}, args={"output_size": (1, None)}),
    ]
    return probes


def _norm() -> list[Probe]:
    bn = (*nn_("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"), *f_("batch_norm"), *t_("batch_norm"))
    inorm = (*nn_("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"), *f_("instance_norm"))
    gn, ln = (*nn_("GroupNorm"), *f_("group_norm")), (*nn_("LayerNorm"), *f_("layer_norm"), *t_("layer_norm"))
    return [
        Probe("nn.BatchNorm2d()", bn, lambda: _stats(nn.BatchNorm2d(4)), "norm", facts={"training": False}),
        Probe("nn.BatchNorm2d(affine=False)", bn, lambda: _stats(nn.BatchNorm2d(4, affine=False)), "norm",
              facts={"training": False}, args={"affine": False}),
        Probe("nn.BatchNorm1d() on N×C", bn, lambda: _stats(nn.BatchNorm1d(16)), "norm", shapes=((2, 16),),
              facts={"training": False}),
        Probe("nn.BatchNorm1d() on N×C×L", bn, lambda: _stats(nn.BatchNorm1d(4)), "norm", shapes=((1, 4, 16),),
              facts={"training": False}),
        Probe("nn.BatchNorm3d()", bn, lambda: _stats(nn.BatchNorm3d(4)), "norm", shapes=((1, 4, 4, 4, 4),),
              facts={"training": False}),
        Probe("F.batch_norm(training=True) [batch statistics at inference]", f_("batch_norm"),
              fn(lambda x: F.batch_norm(x, None, None, training=True)), "norm", shapes=((2, 4, 12, 12),),
              facts={"training": True}),
        Probe("nn.InstanceNorm2d()", inorm, lambda: nn.InstanceNorm2d(4), "norm",
              facts={"affine": False, "track_running_stats": False}),
        Probe("nn.InstanceNorm2d(affine=True)", inorm, lambda: _stats(nn.InstanceNorm2d(4, affine=True)), "norm",
              facts={"affine": True, "track_running_stats": False}),
        Probe("nn.InstanceNorm2d(track_running_stats=True)", inorm,
              lambda: _stats(nn.InstanceNorm2d(4, track_running_stats=True)), "norm",
              facts={"affine": False, "track_running_stats": True}),
        Probe("nn.InstanceNorm1d()", inorm, lambda: nn.InstanceNorm1d(4), "norm", shapes=((1, 4, 16),),
              facts={"affine": False, "track_running_stats": False}),
        Probe("nn.GroupNorm(num_groups=2)", gn, lambda: _stats(nn.GroupNorm(2, 4)), "norm", args={"num_groups": 2}),
        Probe("nn.GroupNorm(num_groups=1)", gn, lambda: _stats(nn.GroupNorm(1, 4)), "norm", args={"num_groups": 1}),
        Probe("nn.LayerNorm(normalized_shape=C) on N×L×C", ln, lambda: _stats(nn.LayerNorm(16)), "norm",
              shapes=(SEQ,), facts={"elementwise_affine": True}),
        Probe("nn.LayerNorm(normalized_shape=(C, H, W))", ln, lambda: _stats(nn.LayerNorm([4, 12, 12])), "norm",
              facts={"elementwise_affine": True}),
        Probe("nn.LayerNorm(elementwise_affine=False)", ln, lambda: nn.LayerNorm(16, elementwise_affine=False),
              "norm", shapes=(SEQ,), facts={"elementwise_affine": False}),
        Probe("F.normalize(p=2, dim=1)", f_("normalize"), fn(lambda x: F.normalize(x, dim=1)), "norm"),
        Probe("nn.LocalResponseNorm(size=3)", (*nn_("LocalResponseNorm"), *f_("local_response_norm")),
              lambda: nn.LocalResponseNorm(3), "norm"),
    ]


def _activation() -> list[Probe]:
    def act(key: str, apis: tuple[str, ...], build: Builder, **kw: Any) -> Probe:
        return Probe(key, apis, build, "activation", **kw)

    return [
        act("nn.ReLU()", (*nn_("ReLU"), *f_("relu", "relu_"), *t_("relu"), *m_("relu")), nn.ReLU),
        act("nn.ReLU6()", (*nn_("ReLU6"), *f_("relu6")), nn.ReLU6),
        act("nn.LeakyReLU(negative_slope=0.1)", (*nn_("LeakyReLU"), *f_("leaky_relu")), lambda: nn.LeakyReLU(0.1)),
        act("nn.PReLU(num_parameters=1)", (*nn_("PReLU"), *f_("prelu")), lambda: _prelu(1), args={"num_parameters": 1}),
        act("nn.PReLU(num_parameters=C)", (*nn_("PReLU"), *f_("prelu")), lambda: _prelu(4), args={"num_parameters": 4}),
        act("nn.ELU()", (*nn_("ELU"), *f_("elu")), nn.ELU),
        act("nn.SELU()", (*nn_("SELU"), *f_("selu"), *t_("selu")), nn.SELU),
        act("nn.CELU()", (*nn_("CELU"), *f_("celu")), nn.CELU),
        act("nn.GELU()", (*nn_("GELU"), *f_("gelu")), nn.GELU, facts={"approximate": "none"}),
        act("nn.GELU(approximate='tanh')", (*nn_("GELU"), *f_("gelu")), lambda: nn.GELU("tanh"),
            facts={"approximate": "tanh"}),
        act("nn.SiLU()", (*nn_("SiLU"), *f_("silu")), nn.SiLU),
        act("nn.Mish()", (*nn_("Mish"), *f_("mish")), nn.Mish),
        act("nn.Hardswish()", (*nn_("Hardswish"), *f_("hardswish")), nn.Hardswish),
        act("nn.Hardsigmoid()", (*nn_("Hardsigmoid"), *f_("hardsigmoid")), nn.Hardsigmoid),
        act("nn.Hardtanh(min_val=-1, max_val=1)", (*nn_("Hardtanh"), *f_("hardtanh")), nn.Hardtanh),
        act("nn.Sigmoid()", (*nn_("Sigmoid"), *f_("sigmoid"), *t_("sigmoid"), *m_("sigmoid")), nn.Sigmoid),
        act("nn.Tanh()", (*nn_("Tanh"), *f_("tanh"), *t_("tanh"), *m_("tanh")), nn.Tanh),
        act("nn.Softplus()", (*nn_("Softplus"), *f_("softplus")), nn.Softplus),
        act("nn.Softsign()", (*nn_("Softsign"), *f_("softsign")), nn.Softsign),
        act("nn.LogSigmoid()", (*nn_("LogSigmoid"), *f_("logsigmoid")), nn.LogSigmoid),
        act("nn.Threshold(threshold=0.1, value=20)", (*nn_("Threshold"), *f_("threshold")),
            lambda: nn.Threshold(0.1, 20.0)),
        act("nn.Hardshrink()", (*nn_("Hardshrink"), *f_("hardshrink")), nn.Hardshrink),
        act("nn.Softmax(dim=1)", (*nn_("Softmax"), *f_("softmax"), *t_("softmax"), *m_("softmax")),
            lambda: nn.Softmax(1), facts={"last_dim": False}, args={"dim": 1}),
        act("nn.Softmax(dim=-1)", (*nn_("Softmax"), *f_("softmax"), *t_("softmax"), *m_("softmax")),
            lambda: nn.Softmax(-1), facts={"last_dim": True}, args={"dim": -1}),
        act("nn.LogSoftmax(dim=1)", (*nn_("LogSoftmax"), *f_("log_softmax"), *t_("log_softmax")),
            lambda: nn.LogSoftmax(1), facts={"last_dim": False}, args={"dim": 1}),
        act("nn.LogSoftmax(dim=-1)", (*nn_("LogSoftmax"), *f_("log_softmax"), *t_("log_softmax")),
            lambda: nn.LogSoftmax(-1), facts={"last_dim": True}, args={"dim": -1}),
        act("nn.Softmax2d()", nn_("Softmax2d"), nn.Softmax2d),
        act("nn.GLU(dim=1)", (*nn_("GLU"), *f_("glu")), lambda: nn.GLU(1)),
    ]


def _prelu(n: int) -> nn.Module:
    module = nn.PReLU(n)
    with torch.no_grad():
        module.weight.copy_(torch.rand(n) * 0.5)
    return module


_RESIZE = (*nn_("Upsample"), *f_("interpolate", "upsample"))


def _resize(key: str, mode: str, *, corners: bool | None = None, by: str = "scale_factor",
            shapes: tuple[tuple[int, ...], ...] = (X,), extra: tuple[str, ...] = (), **kwargs: Any) -> Probe:
    """An ``F.interpolate`` probe; ``by`` is how the output size is given (a fact rules can see)."""
    facts: dict[str, Any] = {"mode": mode, "resize_by": by}
    if corners is not None:
        facts["align_corners"] = corners
        kwargs["align_corners"] = corners
    if by == "size_of_tensor":
        build = fn(lambda x, y: F.interpolate(x, size=y.shape[-2:], mode=mode, **kwargs))
    else:
        build = fn(lambda x: F.interpolate(x, mode=mode, **kwargs))
    args = {k: v for k, v in kwargs.items() if k != "align_corners"}
    return Probe(key, _RESIZE + extra, build, "resize", shapes=shapes, facts=facts, args=args)


def _resizes() -> list[Probe]:
    near = (*nn_("UpsamplingNearest2d"), *f_("upsample_nearest"))
    bil_true = (*nn_("UpsamplingBilinear2d"), *f_("upsample_bilinear"))
    both = (X, (1, 4, 24, 24))
    probes = [
        _resize("F.interpolate(scale_factor=2, mode='nearest')", "nearest", scale_factor=2, extra=near),
        _resize("F.interpolate(size=(24, 24), mode='nearest')", "nearest", by="size", size=(24, 24), extra=near),
        _resize("F.interpolate(size=y.shape[-2:], mode='nearest')", "nearest", by="size_of_tensor", shapes=both),
        _resize("F.interpolate(scale_factor=0.5, mode='nearest')", "nearest", scale_factor=0.5),
        _resize("F.interpolate(scale_factor=1.5, mode='nearest')", "nearest", scale_factor=1.5),
        _resize("F.interpolate(scale_factor=2, mode='nearest-exact')", "nearest-exact", scale_factor=2),
    ]
    for corners in (False, True):
        extra = bil_true if corners else ()
        probes += [
            _resize(f"F.interpolate(scale_factor=2, mode='bilinear', align_corners={corners})", "bilinear",
                    corners=corners, scale_factor=2, extra=extra),
            _resize(f"F.interpolate(size=(24, 24), mode='bilinear', align_corners={corners})", "bilinear",
                    corners=corners, by="size", size=(24, 24), extra=extra),
            _resize(f"F.interpolate(size=y.shape[-2:], mode='bilinear', align_corners={corners})", "bilinear",
                    corners=corners, by="size_of_tensor", shapes=both),
            _resize(f"F.interpolate(scale_factor=0.5, mode='bilinear', align_corners={corners})", "bilinear",
                    corners=corners, scale_factor=0.5),
            _resize(f"F.interpolate(scale_factor=2, mode='bicubic', align_corners={corners})", "bicubic",
                    corners=corners, scale_factor=2),
            _resize(f"F.interpolate(scale_factor=2, mode='linear', align_corners={corners}) on N×C×L", "linear",
                    corners=corners, scale_factor=2, shapes=((1, 4, 16),)),
            _resize(f"F.interpolate(scale_factor=2, mode='trilinear', align_corners={corners})", "trilinear",
                    corners=corners, scale_factor=2, shapes=((1, 4, 4, 4, 4),)),
        ]
    return [
        *probes,
        _resize("F.interpolate(scale_factor=1.5, mode='bilinear', align_corners=False)", "bilinear", corners=False,
                scale_factor=1.5),
        _resize("F.interpolate(scale_factor=1.5, mode='bilinear', recompute_scale_factor=True)", "bilinear",
                corners=False, scale_factor=1.5, recompute_scale_factor=True),
        _resize("F.interpolate(scale_factor=0.5, mode='bilinear', antialias=True)", "bilinear", corners=False,
                scale_factor=0.5, antialias=True),
        _resize("F.interpolate(scale_factor=2, mode='nearest') on N×C×L", "nearest", scale_factor=2,
                shapes=((1, 4, 16),)),
        _resize("F.interpolate(scale_factor=2, mode='nearest') on N×C×D×H×W", "nearest", scale_factor=2,
                shapes=((1, 4, 4, 4, 4),)),
        _resize("F.interpolate(size=(6, 6), mode='area') on 12×12", "area", by="size", size=(6, 6)),
        _resize("F.interpolate(size=(5, 5), mode='area') on 12×12", "area", by="size", size=(5, 5)),
    ]


def _reshape() -> list[Probe]:
    def shp(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "shape", **kw)

    return [
        shp("torch.flatten(start_dim=1)", (*t_("flatten"), *nn_("Flatten"), *m_("flatten")), lambda x: x.flatten(1)),
        shp("Tensor.view(x.size(0), -1)", m_("view"), lambda x: x.view(x.size(0), -1), facts={"dynamic": True}),
        shp("Tensor.view(1, -1)", m_("view"), lambda x: x.view(1, -1), facts={"dynamic": False}),
        shp("Tensor.reshape(n, c, h * w) from x.shape", (*m_("reshape"), *t_("reshape")),
            lambda x: x.reshape(x.shape[0], x.shape[1], x.shape[2] * x.shape[3]), facts={"dynamic": True}),
        shp("Tensor.unflatten(1, (2, 2))", (*m_("unflatten"), *t_("unflatten"), *nn_("Unflatten")),
            lambda x: x.unflatten(1, (2, 2))),
        shp("Tensor.permute(0, 2, 3, 1)", (*m_("permute"), *t_("permute")), lambda x: x.permute(0, 2, 3, 1)),
        shp("Tensor.permute(0, 2, 3, 1).contiguous().view(n, -1, c)", (*m_("permute", "contiguous", "view"),),
            lambda x: x.permute(0, 2, 3, 1).contiguous().view(x.shape[0], -1, x.shape[1])),
        shp("Tensor.transpose(1, 2)", (*m_("transpose"), *t_("transpose")), lambda x: x.transpose(1, 2)),
        shp("Tensor.t() on 2-D", (*m_("t"), *t_("t")), lambda x: x.t(), shapes=((6, 5),)),
        shp("Tensor.squeeze(2) on N×C×1×W", (*m_("squeeze"), *t_("squeeze")), lambda x: x.squeeze(2),
            shapes=((1, 4, 1, 12),)),
        shp("Tensor.unsqueeze(1)", (*m_("unsqueeze"), *t_("unsqueeze")), lambda x: x.unsqueeze(1)),
        shp("Tensor.unsqueeze(-1) [negative dim]", (*m_("unsqueeze"), *t_("unsqueeze")), lambda x: x.unsqueeze(-1),
            facts={"negative_dim": True}),
        shp("nn.PixelShuffle(upscale_factor=2)", (*nn_("PixelShuffle"), *f_("pixel_shuffle"), *t_("pixel_shuffle")),
            lambda x: F.pixel_shuffle(x, 2)),
        shp("nn.PixelUnshuffle(downscale_factor=2)",
            (*nn_("PixelUnshuffle"), *f_("pixel_unshuffle"), *t_("pixel_unshuffle")),
            lambda x: F.pixel_unshuffle(x, 2)),
        shp("channel shuffle (view, transpose, view)", m_("view", "transpose"),
            lambda x: x.view(1, 2, 2, 12, 12).transpose(1, 2).contiguous().view(1, 4, 12, 12)),
        shp("nn.ChannelShuffle(groups=2)", (*nn_("ChannelShuffle"), *f_("channel_shuffle"), *t_("channel_shuffle")),
            lambda x: F.channel_shuffle(x, 2)),
        shp("Tensor.expand(-1, -1, 12, 12) from N×C×1×1", (*m_("expand"), *t_("broadcast_to")),
            lambda x: x.expand(-1, -1, 12, 12), shapes=((1, 4, 1, 1),)),
        shp("Tensor.expand_as(y)", m_("expand_as"), lambda x, y: x.expand_as(y), shapes=((1, 4, 1, 1), X)),
        shp("Tensor.repeat(1, 2, 1, 1)", m_("repeat"), lambda x: x.repeat(1, 2, 1, 1)),
        shp("torch.repeat_interleave(repeats=2, dim=1)", (*t_("repeat_interleave"), *m_("repeat_interleave")),
            lambda x: torch.repeat_interleave(x, 2, dim=1)),
        shp("torch.tile(dims=(1, 1, 2, 2))", (*t_("tile"), *m_("tile")), lambda x: torch.tile(x, (1, 1, 2, 2))),
        shp("torch.flip(dims=[3])", (*t_("flip"), *m_("flip")), lambda x: torch.flip(x, [3])),
        shp("torch.roll(shifts=1, dims=3)", (*t_("roll"), *m_("roll")), lambda x: torch.roll(x, 1, 3)),
        shp("Tensor.unfold(dimension=3, size=3, step=1)", m_("unfold"), lambda x: x.unfold(3, 3, 1)),
    ]


def _join_split() -> list[Probe]:
    two = (X, X)

    def js(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "shape", **kw)

    return [
        js("torch.cat(dim=1)", (*t_("cat", "concat", "concatenate"),), lambda x, y: torch.cat([x, y], 1), shapes=two),
        js("torch.cat(dim=-1)", (*t_("cat", "concat", "concatenate"),), lambda x, y: torch.cat([x, y], -1),
           shapes=two),
        js("torch.stack(dim=1)", t_("stack"), lambda x, y: torch.stack([x, y], 1), shapes=two),
        js("torch.stack(dim=-1) [negative dim]", t_("stack"), lambda x, y: torch.stack([x, y], -1), shapes=two,
           facts={"negative_dim": True}),
        js("torch.split(split_size=2, dim=1)", (*t_("split"), *m_("split")), lambda x: torch.split(x, 2, 1),
           facts={"even": True}),
        js("torch.split([1, 3], dim=1)", (*t_("split"), *m_("split")), lambda x: torch.split(x, [1, 3], 1),
           facts={"even": False}),
        js("torch.chunk(chunks=2, dim=1)", (*t_("chunk"), *m_("chunk")), lambda x: torch.chunk(x, 2, 1),
           facts={"even": True}),
        js("torch.chunk(chunks=3, dim=1) on 4 channels", (*t_("chunk"), *m_("chunk")), lambda x: torch.chunk(x, 3, 1),
           facts={"even": False}),
        js("torch.unbind(dim=1)", (*t_("unbind"), *m_("unbind")), lambda x: torch.unbind(x, 1)),
        js("Tensor[:, :2]", m_("__getitem__"), lambda x: x[:, :2]),
        js("Tensor[..., 1:-1]", m_("__getitem__"), lambda x: x[..., 1:-1]),
        js("Tensor[:, :, ::2, ::2] [stride slicing]", m_("__getitem__"),
           lambda x: torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)),
        js("Tensor[:, -1]", m_("__getitem__", "select"), lambda x: x[:, -1]),
        js("Tensor[:, [0, 2]]", m_("__getitem__"), lambda x: x[:, [0, 2]]),
        js("Tensor[mask] [boolean mask]", (*m_("__getitem__"), *t_("masked_select")), lambda x: x[x > 0]),
        js("torch.narrow(dim=1, start=1, length=2)", (*t_("narrow"), *m_("narrow")),
           lambda x: torch.narrow(x, 1, 1, 2)),
        js("torch.index_select(dim=1)", (*t_("index_select"), *m_("index_select")),
           lambda x: torch.index_select(x, 1, torch.tensor([3, 0]))),
        js("torch.gather(dim=1)", (*t_("gather"), *m_("gather")),
           lambda x: torch.gather(x, 1, (torch.arange(2) * 3).view(1, 2, 1, 1).expand(1, 2, 12, 12))),
        js("torch.where(cond, x, y)", t_("where"), lambda x, y: torch.where(x > 0, x, y), shapes=two),
        js("torch.where(cond, x, 0.0)", t_("where"), lambda x: torch.where(x > 0, x, 0.0)),
        js("Tensor.masked_fill(mask, 0)", (*m_("masked_fill"), *t_("masked_fill")), lambda x: x.masked_fill(x < 0, 0)),
        js("torch.nonzero()", (*t_("nonzero"), *m_("nonzero")), lambda x: torch.nonzero(x > 0)),
    ]


def _pad() -> list[Probe]:
    pad = f_("pad")
    return [
        Probe("F.pad(mode='constant')", (*pad, *nn_("ZeroPad2d", "ConstantPad2d")),
              fn(lambda x: F.pad(x, (1, 1, 1, 1))),
              "pad", facts={"mode": "constant"}, args={"pad": (1, 1, 1, 1)}),
        Probe("F.pad((0, 1, 0, 1)) [asymmetric]", (*pad, *nn_("ZeroPad2d")), fn(lambda x: F.pad(x, (0, 1, 0, 1))),
              "pad", facts={"mode": "constant"}, args={"pad": (0, 1, 0, 1)}),
        Probe("F.pad(mode='constant', value=-1) on channels", pad,
              fn(lambda x: F.pad(x, (0, 0, 0, 0, 1, 1), value=-1.0)),
              "pad", facts={"mode": "constant"}, args={"pad": (0, 0, 0, 0, 1, 1)}),
        Probe("F.pad((-1, -1, -1, -1)) [cropping]", pad, fn(lambda x: F.pad(x, (-1, -1, -1, -1))), "pad",
              facts={"mode": "constant"}, args={"pad": (-1, -1, -1, -1)}),
        *[Probe(f"F.pad(mode='{mode}')", (*pad, *nn_(f"{module}Pad2d")),
                fn(lambda x, m=mode: F.pad(x, (1, 1, 1, 1), m)),
                "pad", facts={"mode": mode}, args={"pad": (1, 1, 1, 1)})
          for mode, module in (("reflect", "Reflection"), ("replicate", "Replication"), ("circular", "Circular"))],
        Probe("F.pad(mode='reflect') on N×C×L", (*pad, *nn_("ReflectionPad1d")),
              fn(lambda x: F.pad(x, (2, 2), "reflect")),
              "pad", shapes=((1, 4, 16),), facts={"mode": "reflect"}),
    ]


class _Attention(nn.Module):
    """``F.scaled_dot_product_attention`` on q, k, v projected from one sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(16, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).view(1, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v)


class _MHA(nn.Module):
    """``nn.MultiheadAttention`` as a ViT block calls it (self-attention, batch first)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def _linear() -> list[Probe]:
    lin = (*nn_("Linear"), *f_("linear"))
    mm = (*t_("matmul"), *m_("matmul", "__matmul__"))

    def la(key: str, apis: tuple[str, ...], f: Callable[..., Any], shapes: tuple[tuple[int, ...], ...],
           **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "linear", shapes=shapes, **kw)

    return [
        Probe("nn.Linear() on N×F", lin, lambda: nn.Linear(16, 8), "linear", shapes=((2, 16),), facts={"rank": 2}),
        Probe("nn.Linear() on N×L×F", lin, lambda: nn.Linear(16, 8), "linear", shapes=(SEQ,), facts={"rank": 3}),
        Probe("nn.Linear(bias=False) on N×L×F", lin, lambda: nn.Linear(16, 8, bias=False), "linear", shapes=(SEQ,),
              facts={"rank": 3}, args={"bias": False}),
        Probe("nn.Linear() on N×C×H×W [last dim]", lin, lambda: nn.Linear(12, 8), "linear", facts={"rank": 4}),
        la("torch.matmul(2-D, 2-D)", mm, lambda a, b: a @ b, ((4, 6), (6, 5)), facts={"rank": 2}),
        la("torch.matmul(3-D, 3-D)", mm, lambda a, b: a @ b, ((2, 4, 6), (2, 6, 5)), facts={"rank": 3}),
        la("torch.matmul(3-D, 2-D)", mm, lambda a, b: a @ b, ((2, 4, 6), (6, 5)), facts={"rank": 3}),
        la("torch.matmul(q, k.transpose(-2, -1)) [4-D attention]", mm, lambda q, k: q @ k.transpose(-2, -1),
           ((1, 2, 5, 8), (1, 2, 5, 8)), facts={"rank": 4}),
        la("torch.bmm", (*t_("bmm"), *m_("bmm")), torch.bmm, ((2, 4, 6), (2, 6, 5))),
        la("torch.mm", (*t_("mm"), *m_("mm")), torch.mm, ((4, 6), (6, 5))),
        la("torch.addmm", t_("addmm"), torch.addmm, ((5,), (4, 6), (6, 5))),
        la("torch.einsum('bik,bkj->bij')", t_("einsum"), lambda a, b: torch.einsum("bik,bkj->bij", a, b),
           ((2, 4, 6), (2, 6, 5))),
        Probe("F.scaled_dot_product_attention()", f_("scaled_dot_product_attention"), _Attention, "linear",
              shapes=(SEQ,)),
        Probe("nn.MultiheadAttention(batch_first=True)",
              (*nn_("MultiheadAttention"), *f_("multi_head_attention_forward")), _MHA, "linear", shapes=(SEQ,)),
    ]


def _reduce() -> list[Probe]:
    def rd(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "reduce", **kw)

    mean, total = (*t_("mean"), *m_("mean")), (*t_("sum"), *m_("sum"))
    mx, amax, arg = (*t_("max"), *m_("max")), (*t_("amax"), *m_("amax")), (*t_("argmax"), *m_("argmax"))
    return [
        rd("Tensor.mean(dim=(2, 3), keepdim=True) [global average]", mean, lambda x: x.mean((2, 3), keepdim=True),
           facts={"keepdim": True}),
        rd("Tensor.mean(dim=1)", mean, lambda x: x.mean(1), facts={"keepdim": False}),
        rd("Tensor.mean() [all elements]", mean, lambda x: x.mean(), facts={"keepdim": False, "all": True}),
        rd("Tensor.sum(dim=1, keepdim=True)", total, lambda x: x.sum(1, keepdim=True), facts={"keepdim": True}),
        rd("Tensor.sum(dim=(2, 3))", total, lambda x: x.sum((2, 3)), facts={"keepdim": False}),
        rd("Tensor.max(dim=1) [values, indices]", mx, lambda x: x.max(1), facts={"keepdim": False}),
        rd("Tensor.max(dim=1, keepdim=True)[0]", mx, lambda x: x.max(1, keepdim=True)[0], facts={"keepdim": True}),
        rd("Tensor.max() [all elements]", mx, lambda x: x.max(), facts={"all": True}),
        rd("Tensor.min(dim=1, keepdim=True)", (*t_("min"), *m_("min")), lambda x: x.min(1, keepdim=True)),
        rd("torch.amax(dim=(2, 3), keepdim=True)", amax, lambda x: torch.amax(x, (2, 3), keepdim=True),
           facts={"keepdim": True}),
        rd("torch.amax(dim=1)", amax, lambda x: torch.amax(x, 1), facts={"keepdim": False}),
        rd("torch.amin(dim=1)", (*t_("amin"), *m_("amin")), lambda x: torch.amin(x, 1)),
        rd("torch.argmax(dim=1)", arg, lambda x: torch.argmax(x, 1), facts={"keepdim": False}),
        rd("torch.argmax(dim=1, keepdim=True)", arg, lambda x: torch.argmax(x, 1, keepdim=True),
           facts={"keepdim": True}),
        rd("torch.argmax() [flattened]", arg, lambda x: torch.argmax(x), facts={"all": True}),
        rd("torch.argmin(dim=1)", (*t_("argmin"), *m_("argmin")), lambda x: torch.argmin(x, 1)),
        rd("Tensor.prod(dim=1)", (*t_("prod"), *m_("prod")), lambda x: x.prod(1)),
        rd("Tensor.std(dim=1)", (*t_("std"), *m_("std")), lambda x: x.std(1)),
        rd("Tensor.var(dim=(2, 3), keepdim=True)", (*t_("var"), *m_("var")), lambda x: x.var((2, 3), keepdim=True)),
        rd("Tensor.norm(p=2, dim=1, keepdim=True)", (*t_("norm"), *m_("norm"), "torch.linalg.vector_norm"),
           lambda x: x.norm(2, 1, keepdim=True)),
        rd("torch.logsumexp(dim=1)", (*t_("logsumexp"), *m_("logsumexp")), lambda x: torch.logsumexp(x, 1)),
        rd("torch.cumsum(dim=3)", (*t_("cumsum"), *m_("cumsum")), lambda x: torch.cumsum(x, 3)),
        rd("torch.topk(k=3, dim=1)", (*t_("topk"), *m_("topk")), lambda x: torch.topk(x, 3, 1),
           facts={"largest": True}),
        rd("torch.topk(k=3, dim=1, largest=False)", (*t_("topk"), *m_("topk")), lambda x: torch.topk(x, 3, 1, False),
           facts={"largest": False}),
        rd("torch.sort(dim=1)", (*t_("sort"), *m_("sort")), lambda x: torch.sort(x, 1)),
        rd("torch.argsort(dim=1)", (*t_("argsort"), *m_("argsort")), lambda x: torch.argsort(x, 1)),
    ]


def _arith() -> list[Probe]:
    bcast = (X, (1, 4, 1, 1))

    def ew(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "elementwise", **kw)

    add, mul, div = (*t_("add"), *m_("add", "__add__")), (*t_("mul"), *m_("mul", "__mul__")), (
        *t_("div", "true_divide"), *m_("div", "__truediv__"))
    return [
        ew("torch.add(x, y)", add, torch.add, shapes=(X, X), facts={"broadcast": False}),
        ew("torch.add(x, y) broadcast N×C×1×1", add, torch.add, shapes=bcast, facts={"broadcast": True}),
        ew("torch.add(x, 1.5) [scalar]", add, lambda x: x + 1.5, facts={"scalar": True}),
        ew("torch.sub(x, y) broadcast N×C×1×1", (*t_("sub"), *m_("sub", "__sub__")), torch.sub, shapes=bcast),
        ew("1 - x [rsub]", (*t_("rsub"), *m_("__rsub__")), lambda x: 1 - x),
        ew("torch.mul(x, y) broadcast N×C×1×1", mul, torch.mul, shapes=bcast, facts={"broadcast": True}),
        ew("torch.mul(x, 0.5) [scalar]", mul, lambda x: x * 0.5, facts={"scalar": True}),
        ew("torch.div(x, y) broadcast N×C×1×1", div, lambda x, y: x / (y.abs() + 0.5), shapes=bcast,
           facts={"scalar": False}),
        ew("torch.div(x, 3) [scalar]", div, lambda x: x / 3, facts={"scalar": True}),
        ew("torch.div(x, y, rounding_mode='floor')", (*t_("div", "floor_divide"), *m_("__floordiv__")),
           lambda x, y: torch.div(x * 4, y.abs() + 0.5, rounding_mode="floor"), shapes=(X, X)),
        ew("torch.remainder(x, 0.7)", (*t_("remainder"), *m_("remainder", "__mod__")),
           lambda x: torch.remainder(x, 0.7)),
        ew("torch.fmod(x, 0.7)", (*t_("fmod"), *m_("fmod")), lambda x: torch.fmod(x, 0.7)),
        ew("torch.pow(x, 2)", (*t_("pow"), *m_("pow", "__pow__")), lambda x: x**2, facts={"exponent": "integer"}),
        ew("torch.pow(x, 0.5)", (*t_("pow"), *m_("pow", "__pow__")), lambda x: x**0.5, positive=True,
           facts={"exponent": "fraction"}),
        ew("torch.pow(x, y) [tensor exponent]", (*t_("pow"), *m_("pow", "__pow__")), torch.pow, shapes=(X, X),
           positive=True, facts={"exponent": "tensor"}),
        ew("torch.square(x)", (*t_("square"), *m_("square")), torch.square),
        ew("torch.sqrt(x)", (*t_("sqrt"), *m_("sqrt")), torch.sqrt, positive=True),
        ew("torch.rsqrt(x)", (*t_("rsqrt"), *m_("rsqrt")), torch.rsqrt, positive=True),
        ew("torch.exp(x)", (*t_("exp"), *m_("exp")), torch.exp),
        ew("torch.log(x)", (*t_("log"), *m_("log")), torch.log, positive=True),
        ew("torch.log2(x)", (*t_("log2"), *m_("log2")), torch.log2, positive=True),
        ew("torch.abs(x)", (*t_("abs"), *m_("abs")), torch.abs),
        ew("torch.neg(x)", (*t_("neg"), *m_("neg", "__neg__")), torch.neg),
        ew("torch.reciprocal(x)", (*t_("reciprocal"), *m_("reciprocal")), torch.reciprocal, positive=True),
        ew("torch.clamp(min=-1, max=1)", (*t_("clamp", "clip"), *m_("clamp", "clip")), lambda x: x.clamp(-1, 1),
           facts={"bounds": "both"}),
        ew("torch.clamp(min=0)", (*t_("clamp", "clip"), *m_("clamp", "clip")),
           lambda x: x.clamp(min=0), facts={"bounds": "min"}),
        ew("torch.clamp(max=0.5)", (*t_("clamp", "clip"), *m_("clamp", "clip")),
           lambda x: x.clamp(max=0.5), facts={"bounds": "max"}),
        # aten::clamp_min/clamp_max are ops of their own (pnnx writes them as an expression ncnn lacks)
        ew("Tensor.clamp_min(0.0)", (*t_("clamp_min"), *m_("clamp_min")), lambda x: x.clamp_min(0.0),
           facts={"bounds": "min"}),
        ew("Tensor.clamp_max(0.5)", (*t_("clamp_max"), *m_("clamp_max")), lambda x: x.clamp_max(0.5),
           facts={"bounds": "max"}),
        ew("torch.clamp(min=tensor, max=tensor)", (*t_("clamp", "clip"), *m_("clamp", "clip")),
           lambda x, lo: x.clamp(lo, lo + 1), shapes=(X, (1, 4, 1, 1)), facts={"bounds": "tensor"}),
    ]


def _math() -> list[Probe]:
    def ew(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "elementwise", **kw)

    return [
        ew("torch.floor(x)", (*t_("floor"), *m_("floor")), lambda x: torch.floor(x * 3)),
        ew("torch.ceil(x)", (*t_("ceil"), *m_("ceil")), lambda x: torch.ceil(x * 3)),
        ew("torch.round(x)", (*t_("round"), *m_("round")), lambda x: torch.round(x * 3)),
        ew("torch.sign(x)", (*t_("sign"), *m_("sign")), torch.sign),
        ew("torch.erf(x)", (*t_("erf"), *m_("erf")), torch.erf),
        ew("torch.sin(x)", (*t_("sin"), *m_("sin")), torch.sin),
        ew("torch.cos(x)", (*t_("cos"), *m_("cos")), torch.cos),
        ew("torch.atan2(x, y)", (*t_("atan2"), *m_("atan2")), torch.atan2, shapes=(X, X)),
        ew("torch.maximum(x, y)", (*t_("maximum", "max"),), torch.maximum, shapes=(X, X)),
        ew("torch.minimum(x, y)", (*t_("minimum", "min"),), torch.minimum, shapes=(X, X)),
        ew("(x > y).float() [comparison]", (*t_("gt"), *m_("gt", "__gt__", "float")), lambda x, y: (x > y).float(),
           shapes=(X, X)),
        ew("(x.floor() == y.floor()).float() [equality]", (*t_("eq"), *m_("eq", "__eq__")),
           lambda x, y: ((x * 2).floor() == (y * 2).floor()).float(), shapes=(X, X)),
        ew("torch.logical_and(x > 0, y > 0)", (*t_("logical_and"), *m_("__and__")),
           lambda x, y: torch.logical_and(x > 0, y > 0), shapes=(X, X)),
        ew("torch.isnan(x)", (*t_("isnan"), *m_("isnan")), torch.isnan),
        ew("torch.lerp(x, y, 0.3)", (*t_("lerp"), *m_("lerp")), lambda x, y: torch.lerp(x, y, 0.3), shapes=(X, X)),
        ew("torch.addcmul(x, y, z)", (*t_("addcmul"), *m_("addcmul")), torch.addcmul, shapes=(X, X, X)),
        ew("torch.log1p(x)", (*t_("log1p"), *m_("log1p")), torch.log1p, positive=True),
        ew("torch.isinf(x)", (*t_("isinf"), *m_("isinf")), lambda x: torch.isinf(1 / x)),
        ew("torch.nan_to_num(x)", (*t_("nan_to_num"), *m_("nan_to_num")), lambda x: torch.nan_to_num(x.log())),
    ]


def _compare() -> list[Probe]:
    def cmp(key: str, apis: tuple[str, ...], f: Callable[..., Any]) -> Probe:
        return Probe(key, apis, fn(f), "elementwise", shapes=(X, X))

    return [
        cmp("(x >= y).float()", (*t_("ge"), *m_("ge", "__ge__")), lambda x, y: (x >= y).float()),
        cmp("(x <= y).float()", (*t_("le"), *m_("le", "__le__")), lambda x, y: (x <= y).float()),
        cmp("(x.floor() != y.floor()).float()", (*t_("ne"), *m_("ne", "__ne__")),
            lambda x, y: (x.floor() != y.floor()).float()),
        cmp("torch.logical_or(x > 0, y > 0)", (*t_("logical_or"), *m_("__or__")),
            lambda x, y: torch.logical_or(x > 0, y > 0)),
        cmp("torch.logical_not(x > y)", (*t_("logical_not"), *m_("logical_not", "__invert__")),
            lambda x, y: torch.logical_not(x > y)),
        cmp("F.cosine_similarity(dim=1)", (*f_("cosine_similarity"), *nn_("CosineSimilarity")),
            lambda x, y: F.cosine_similarity(x, y, dim=1)),
        cmp("torch.cdist(p=2)", t_("cdist"), lambda x, y: torch.cdist(x, y)),
    ]


def _assign(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[y < 0] = 0
    return y


def _assign_slice(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[:, 1] = 1.0
    return y


def _index() -> list[Probe]:
    def ix(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "shape", **kw)

    index = torch.tensor([[[[0]], [[3]]]]).expand(1, 2, 12, 12)
    return [
        ix("Tensor[mask] = 0 [index_put]", (*m_("__setitem__", "index_put_"),), _assign),
        ix("Tensor[:, 1] = 1.0 [slice assignment]", m_("__setitem__", "copy_"), _assign_slice),
        ix("Tensor.scatter(dim=1, index, src)", (*t_("scatter"), *m_("scatter", "scatter_")),
           lambda x: torch.zeros_like(x).scatter(1, index, x[:, :2])),
        ix("Tensor.scatter_add(dim=1, index, src)", (*t_("scatter_add"), *m_("scatter_add", "scatter_add_")),
           lambda x: x.scatter_add(1, index, x[:, :2])),
        ix("torch.tril(x)", (*t_("tril"), *m_("tril")), torch.tril),
        ix("torch.movedim(1, -1)", (*t_("movedim", "moveaxis"), *m_("movedim")), lambda x: torch.movedim(x, 1, -1)),
        ix("Tensor.new_zeros(x.shape)", m_("new_zeros"), lambda x: x.new_zeros(x.shape) + x),
        ix("Tensor.clone()", (*t_("clone"), *m_("clone")), lambda x: x.clone() * 2),
    ]


def _dtype() -> list[Probe]:
    def dt(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "dtype", **kw)

    return [
        dt("Tensor.long() [float to int64 and back]", m_("long", "to", "float"), lambda x: (x * 10).long().float(),
           facts={"dtype": "int64"}),
        dt("Tensor.int() [float to int32 and back]", m_("int", "to", "float"), lambda x: (x * 10).int().float(),
           facts={"dtype": "int32"}),
        dt("Tensor.half() [float16 round trip]", m_("half", "to", "float"), lambda x: x.half().float(),
           facts={"dtype": "float16"}),
        dt("Tensor.double() [float64 round trip]", m_("double", "to", "float"), lambda x: (x.double() * 3).float(),
           facts={"dtype": "float64"}),
        dt("Tensor.half() [float16 arithmetic]", m_("half", "to"), lambda x: x.half() * 2 + 1,
           facts={"dtype": "float16", "compute": True}),
        dt("integer arithmetic (x.long() * 3 // 2)", m_("long", "__floordiv__", "__mul__"),
           lambda x: (x * 10).long() * 3 // 2),
        dt("Tensor.type_as(y)", m_("type_as"), lambda x, y: (x * 10).long().type_as(y) + y, shapes=(X, X)),
    ]


def _dropout_identity() -> list[Probe]:
    return [
        Probe("nn.Dropout(p=0.5) [eval]", (*nn_("Dropout"), *f_("dropout")), lambda: nn.Dropout(0.5), "dropout"),
        Probe("nn.Dropout2d(p=0.5) [eval]", (*nn_("Dropout2d"), *f_("dropout2d")), lambda: nn.Dropout2d(0.5),
              "dropout"),
        Probe("nn.AlphaDropout(p=0.5) [eval]", (*nn_("AlphaDropout"), *f_("alpha_dropout")),
              lambda: nn.AlphaDropout(0.5), "dropout"),
        Probe("F.dropout(training=True)", f_("dropout"), fn(lambda x: F.dropout(x, 0.5, training=True) * 0 + x),
              "dropout", facts={"training": True}),
        Probe("nn.Identity()", nn_("Identity"), nn.Identity, "dropout"),
    ]


def _creation() -> list[Probe]:
    def cr(key: str, apis: tuple[str, ...], f: Callable[..., Any], **kw: Any) -> Probe:
        return Probe(key, apis, fn(f), "creation", **kw)

    return [
        cr("torch.zeros_like(x)", t_("zeros_like"), lambda x: torch.zeros_like(x) + x),
        cr("torch.ones(x.shape)", t_("ones"), lambda x: torch.ones(x.shape) * x),
        cr("torch.full_like(x, 2.0)", t_("full_like"), lambda x: torch.full_like(x, 2.0) * x),
        cr("torch.arange(x.shape[-1])", t_("arange"), lambda x: x + torch.arange(x.shape[-1]), facts={"dynamic": True}),
        # stands for arange from shapes only: its failure (ncnn) is the aranges', and a meshgrid of
        # constants passes there (a held-out warp field: meshgrid of linspace ran right on ncnn)
        cr("torch.meshgrid(arange(h), arange(w), indexing='ij') [grid]", t_("arange"),
           lambda x: x + torch.stack(torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij"))
           .sum(0), facts={"dynamic": True}),
        cr("torch.linspace(0, 1, 12)", t_("linspace"), lambda x: x * torch.linspace(0, 1, 12)),
        cr("torch.linspace(-1, 1, x.shape[-1]) [traced steps]", t_("linspace"),
           lambda x: x * torch.linspace(-1, 1, x.shape[-1]), facts={"dynamic": True}),
        cr("F.one_hot(x.argmax(1), 4)", f_("one_hot"), lambda x: F.one_hot(x.argmax(1), 4)),
        cr("torch.tensor([...]) constant", t_("tensor"),
           lambda x: x * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)),
    ]


def _grid(x: torch.Tensor) -> torch.Tensor:
    """A sampling grid in [-1.2, 1.2] (a few points outside, for the padding modes), from the input."""
    return torch.tanh(x[:, :2].permute(0, 2, 3, 1)) * 1.2


def _boxes(x: torch.Tensor) -> torch.Tensor:
    """Six boxes (x1, y1, x2, y2) inside a 12×12 map, derived from the input (so NMS sees real data)."""
    xy = torch.sigmoid(x[0, 0, :6, :2]) * 8
    wh = torch.sigmoid(x[0, 1, :6, :2]) * 4 + 0.5
    return torch.cat([xy, xy + wh], 1)


class _RoI(nn.Module):
    """A torchvision RoI op on fixed boxes (batch index, x1, y1, x2, y2)."""

    def __init__(self, op: str) -> None:
        super().__init__()
        import torchvision.ops

        self.op = getattr(torchvision.ops, op)
        self.register_buffer("rois", torch.tensor([[0, 1.0, 1.0, 7.0, 9.0], [0, 2.5, 0.5, 11.0, 6.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x, self.rois, output_size=2, spatial_scale=1.0)


def _tv_nms() -> nn.Module:
    import torchvision.ops

    return Fn(lambda x: torchvision.ops.nms(_boxes(x), torch.sigmoid(x[0, 2, :6, 0]), 0.3))


def _tv_deform() -> nn.Module:
    import torchvision.ops

    return torchvision.ops.DeformConv2d(4, 8, 3, padding=1)


def _vision() -> list[Probe]:
    gs = f_("grid_sample")

    def grid(key: str, **kw: Any) -> Probe:
        facts = {"mode": kw.get("mode", "bilinear"), "padding_mode": kw.get("padding_mode", "zeros"),
                 "align_corners": kw.get("align_corners", False)}
        return Probe(key, gs, fn(lambda x: F.grid_sample(x, _grid(x), **{"align_corners": False, **kw})), "vision",
                     facts=facts)

    return [
        grid("F.grid_sample(mode='bilinear', align_corners=False)"),
        grid("F.grid_sample(mode='bilinear', align_corners=True)", align_corners=True),
        grid("F.grid_sample(mode='nearest')", mode="nearest"),
        grid("F.grid_sample(padding_mode='border')", padding_mode="border"),
        grid("F.grid_sample(mode='bicubic')", mode="bicubic"),
        Probe("F.affine_grid(size=(1, 4, 8, 8), align_corners=False)", f_("affine_grid"),
              fn(lambda t: F.affine_grid(t, [1, 4, 8, 8], align_corners=False)), "vision", shapes=((1, 2, 3),)),
        Probe("torchvision.ops.roi_align(output_size=2)", ("torchvision.ops.roi_align", "torchvision.ops.RoIAlign"),
              lambda: _RoI("roi_align"), "vision"),
        Probe("torchvision.ops.roi_pool(output_size=2)", ("torchvision.ops.roi_pool", "torchvision.ops.RoIPool"),
              lambda: _RoI("roi_pool"), "vision"),
        Probe("torchvision.ops.nms(iou_threshold=0.3)", ("torchvision.ops.nms",), _tv_nms, "vision"),
        Probe("torchvision.ops.DeformConv2d(kernel_size=3)", ("torchvision.ops.DeformConv2d",
              "torchvision.ops.deform_conv2d"), _tv_deform_with_offsets, "vision"),
    ]


class _Deform(nn.Module):
    """Deformable convolution with offsets predicted by a conv, as detection necks use it."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Conv2d(4, 18, 3, padding=1)
        self.conv = _tv_deform()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


def _tv_deform_with_offsets() -> nn.Module:
    return _Deform()


FAMILIES: tuple[Callable[[], list[Probe]], ...] = (
    _conv, _conv_transpose, _max_pool, _avg_pool, _adaptive_pool, _norm, _activation, _resizes, _reshape,
    _join_split, _index, _pad, _linear, _reduce, _arith, _math, _compare, _dtype, _dropout_identity, _creation,
    _vision,
)


def all_probes() -> list[Probe]:
    """Every probe, in a stable order; keys are unique (checked here, since a duplicate would shadow)."""
    probes = [probe for family in FAMILIES for probe in family()]
    seen: set[str] = set()
    for probe in probes:
        if probe.key in seen:
            raise ValueError(f"duplicate probe key {probe.key!r}")
        seen.add(probe.key)
    return probes


def make_inputs(probe: Probe, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """The probe's example inputs: standard normal (or in [0.5, 2) when ``positive``), seeded per probe."""
    generator = torch.Generator().manual_seed(seed + sum(map(ord, probe.key)))
    if probe.positive:
        return tuple(torch.rand(shape, generator=generator) * 1.5 + 0.5 for shape in probe.shapes)
    return tuple(torch.randn(shape, generator=generator) for shape in probe.shapes)


def build(probe: Probe, seed: int = 0) -> nn.Module:
    """The probe's model in eval mode, with seeded weights."""
    torch.manual_seed(seed)
    return probe.build().eval()
