"""MC201/MC202 (and MC203): bilinear upsampling rewritten with operations opset 9 runs.

Why: before opset 11, ONNX has only ``Upsample``, whose linear mode is not PyTorch's bilinear
(measured: a scale-2 bilinear upsample exports without error and differs by 0.88 in ONNX
Runtime and Caffe2), and ``align_corners=True`` does not export at all. The seed's author
rewrote the upsampling as ``nn.ConvTranspose2d`` by hand; done naively that adds trainable
weights (checkpoints stop loading) and gets the borders wrong. This fixer inserts one small
helper class per file, ``_ExactBilinearUpsample``, and calls it where the model upsampled:

- ``align_corners=False`` and a power-of-two factor (2, 4, 8): a depthwise transposed
  convolution with the fixed bilinear kernel, after repeating the edge pixels once. Proof
  sketch: output ``f*i + t`` of ``F.interpolate`` samples source position
  ``i + (t + 0.5)/f - 0.5``, i.e. weight ``1 - |2t + 1 - f| / 2f`` on input ``i`` and the rest
  on a neighbour: a fixed kernel of ``2f`` taps at stride ``f``. At the borders PyTorch clamps
  the position to the edge pixel; a repeated edge pixel gives the same value. ``1/f`` is exact
  in float, so the weights are PyTorch's exactly; the result differs only in summation order
  (measured <= 2e-7 relative; the property tests check sizes 1..64 and factors 2, 4, 8).
  *Safe*: exact for every input size, and the exported graph (Pad + ConvTranspose) too.
- otherwise (``align_corners=True``, whose sampling step ``(in-1)/(out-1)`` depends on the
  input size and so is no fixed kernel; other factors, where PyTorch's rounded ``1/f`` drifts
  along the image; a ``size=``): one matrix product per axis with PyTorch's own weights for the
  input's size, taken from ``F.interpolate`` of one-hot rows. Exact in PyTorch for every size,
  but the exported graph holds the weights for the traced input size: *unsafe*.

State dict: unchanged (the kernel is a non-persistent buffer, the matrices are not stored).
For ``--target onnx`` the fix is no change: export at opset 11 or later, where ONNX Runtime's
``Resize`` matches PyTorch. ``F.upsample*`` (MC205) is renamed to ``F.interpolate`` with the
mode and ``align_corners`` the alias implied (the alias calls exactly that).

Before::

    self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    y = F.upsample_bilinear(x, scale_factor=2)

After::

    self.up = _ExactBilinearUpsample(scale_factor=2, align_corners=False)
    y = _ExactBilinearUpsample(scale_factor=2, align_corners=True)(x)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import libcst as cst
from modelcheck.findings import Finding
from modelcheck.fixers.base import (
    Applicability,
    Decision,
    Decline,
    Edit,
    Exactness,
    FixContext,
    Helper,
    Names,
    code_of,
    module_name_usable,
    replace_with,
)
from modelcheck.rules import upsampling
from modelcheck.static.source import UNKNOWN, SourceFile, bind_arguments

CODES = ("MC201", "MC202", "MC203")
#: verification order: each fixer's edits are checked as one group, in this order
ORDER = 4
#: its edits change the exported graph, so the fixed model's smoke test must pass too
CHANGES_EXPORT = True
HELPER_KEY = "exact-bilinear-upsample"

#: the helper inserted once per file; ``{name}`` is its collision-free name
HELPER = '''
class {name}(torch.nn.Module):
    """Bilinear upsampling from operations that ONNX opset 9 and Caffe2 run correctly.

    Inserted by `modelcheck --fix` (MC201/MC202): before opset 11, ONNX has no resize that
    matches PyTorch's bilinear one, and align_corners=True does not export at all. This module
    computes what F.interpolate(x, scale_factor=..., size=..., mode="bilinear",
    align_corners=...) computes, borders included, to float rounding:
    - align_corners=False and a power-of-two factor: the edge pixels are repeated once
      (F.interpolate clamps there), then a depthwise transposed convolution with the fixed
      bilinear kernel upsamples. The kernel is a buffer kept out of the state_dict, so
      checkpoints load unchanged. The exported graph works for every input size.
    - otherwise: a matrix product per axis with PyTorch's own interpolation weights for the
      input's size. The exported graph holds them for the traced input size only.
    """

    def __init__(self, scale_factor=None, size=None, align_corners=False):
        super().__init__()
        self.scale_factor, self.size = self._pair(scale_factor), self._pair(size)
        self.align_corners = bool(align_corners)
        kernel = None
        if self.size is None and not align_corners and all(
                float(f).is_integer() and f >= 2 and int(f) & (int(f) - 1) == 0 for f in self.scale_factor):
            # input pixel i weighs 1 - |2t + 1 - f| / 2f in output pixel f*i + t (per axis)
            taps = [torch.tensor([1 - abs(2 * t + 1 - f) / (2 * f) for t in range(-(f // 2), f + f // 2)])
                    for f in (int(f) for f in self.scale_factor)]
            kernel = taps[0][:, None] * taps[1][None, :]
        self.register_buffer("kernel", kernel, persistent=False)

    def forward(self, x):
        if self.kernel is not None:
            fh, fw = (int(f) for f in self.scale_factor)
            channels = int(x.shape[1])
            weight = self.kernel.to(x.dtype).expand(channels, 1, *self.kernel.shape)
            x = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
            return torch.nn.functional.conv_transpose2d(
                x, weight, stride=(fh, fw), padding=(fh // 2 + fh, fw // 2 + fw), groups=channels)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        scale_h, scale_w = self.scale_factor or (None, None)
        out_h, out_w = self.size or (int(h * scale_h), int(w * scale_w))
        x = torch.matmul(x, self._weights(w, int(out_w), scale_w, self.align_corners).to(x).t())
        return torch.matmul(self._weights(h, int(out_h), scale_h, self.align_corners).to(x), x)

    @staticmethod
    def _pair(value):
        return None if value is None else tuple(value) if isinstance(value, (tuple, list)) else (value, value)

    @staticmethod
    def _weights(n_in, n_out, scale, align_corners):
        """(n_out, n_in): row j holds PyTorch's weights for output j (F.interpolate of one-hot rows)."""
        one_hot = torch.eye(n_in).reshape(n_in, 1, 1, n_in)
        how = {{"scale_factor": (1.0, scale)}} if scale else {{"size": (1, n_out)}}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # while tracing, .tolist() makes the weights constants, as meant
            rows = torch.nn.functional.interpolate(  # modelcheck: ignore[MC2] (weights only, not exported)
                one_hot, mode="bilinear", align_corners=align_corners, **how)
            return torch.tensor(rows.reshape(n_in, n_out).t().tolist())
'''


def plan(source: SourceFile, findings: Sequence[Finding], context: FixContext, names: Names) -> list[Decision]:
    """Edits or Declines for the MC201/MC202/MC203 findings in ``source``."""
    codes_at: dict[int, set[str]] = {}
    for finding in findings:
        if finding.code in CODES:
            codes_at.setdefault(finding.location.line, set()).add(finding.code)
    decisions: list[Decision] = []
    for call, _facts in upsampling.extract(source):
        line = source.location(call).line
        codes = codes_at.get(line, set())
        if not codes:
            continue
        decisions.extend(_bilinear(source, call, line, sorted(codes), context, names))
    return decisions


# ----- MC201/MC202/MC203: bilinear upsampling -------------------------------------------------

class _NotRewritten(Exception):
    """Why a call is left as it is: every code found at its line is declined with this reason."""


@dataclass(frozen=True)
class _Upsample:
    """What the rewrite needs of one call, once nothing stands in its way."""

    api: str
    bound: dict[str, cst.BaseExpression]
    align: bool
    scale_expr: cst.BaseExpression | None  # exactly one of scale_expr and size_expr is given
    size_expr: cst.BaseExpression | None
    scale: Any  # the scale factor's value (UNKNOWN when not literal), None with a size

    @property
    def functional(self) -> bool:
        return self.api.startswith("torch.nn.functional.")


def _bilinear(source: SourceFile, call: cst.Call, line: int, codes: list[str], context: FixContext,
              names: Names) -> list[Decision]:
    try:
        upsample = _read_call(source, call, context)
    except _NotRewritten as exc:
        return [Decline(code, line, str(exc)) for code in codes]
    applicability, reason, how = _safety(upsample)
    name = names.fresh("_ExactBilinearUpsample", key=HELPER_KEY)
    helper = Helper(HELPER_KEY, name, HELPER.format(name=name))
    summary = f"{code_of(call.func).strip()}(..., bilinear, align_corners={upsample.align}) -> {name}: {how}"
    first, *others = codes
    return [Edit(first, line, summary, applicability, Exactness.NUMERIC, reason=reason,
                 rewrites=((id(call), _rewrite(upsample, name)),), helpers=(helper,), imports=("torch", "warnings"),
                 also=tuple(others), anchors=(call,))]


def _read_call(source: SourceFile, call: cst.Call, context: FixContext) -> _Upsample:
    """The call's settings; raises _NotRewritten where the fix does not apply or cannot know them."""
    if context.target_name != "caffe2":
        raise _NotRewritten(f"no change needed for --target {context.target_name}: export at --opset 11 or later, "
                            "where ONNX Runtime's Resize matches PyTorch (measured max diff 2e-7)")
    api = source.resolves_to(call.func, tuple(upsampling.APIS))
    if api is None:
        raise _NotRewritten("called through an alias or functools.partial; rewrite the call site by hand")
    spec = upsampling.APIS[api]
    bound, opaque = bind_arguments(call, spec.params)
    if opaque:
        raise _NotRewritten("the call passes *args or **kwargs, so its settings are not known")
    align = _bilinear_align(source, spec, bound)
    for name, allowed in (("recompute_scale_factor", (None, False)), ("antialias", (False,))):
        if name in bound and source.value(bound[name]) not in allowed:
            raise _NotRewritten(f"{name} is set; not rewritten")
    if api.startswith("torch.nn.functional.") and "input" not in bound:
        raise _NotRewritten("the upsampled tensor is not passed as an argument modelcheck can see")
    if not (module_name_usable(source, "torch") and module_name_usable(source, "warnings")):
        raise _NotRewritten("the helper needs the names torch and warnings, which mean something else in this file")
    # An explicit None (``F.interpolate(x, size, None, "bilinear")``) is the same as leaving it out.
    scale_expr, size_expr = (None if bound.get(name) is None or source.value(bound[name]) is None else bound[name]
                             for name in ("scale_factor", "size"))
    if (scale_expr is None) == (size_expr is None):
        raise _NotRewritten("neither or both of size and scale_factor are given")
    scale = source.value(scale_expr) if scale_expr is not None else None
    return _Upsample(api, bound, align, scale_expr, size_expr, scale)


def _bilinear_align(source: SourceFile, spec: Any, bound: dict[str, cst.BaseExpression]) -> bool:
    """align_corners of a call whose mode is known to be bilinear; raises _NotRewritten otherwise."""
    mode = spec.mode if spec.mode is not None else (source.value(bound["mode"]) if "mode" in bound else "nearest")
    if mode != "bilinear":
        why = "not known statically" if mode is UNKNOWN else f"{mode!r}"
        raise _NotRewritten(f"mode is {why}; only mode='bilinear' (4-D input) is rewritten")
    if spec.align_corners is not None:
        align = spec.align_corners
    else:
        align = source.value(bound["align_corners"]) if "align_corners" in bound else None
    if align is UNKNOWN or align not in (None, True, False):
        raise _NotRewritten("align_corners is not known statically")
    return bool(align)


def _safety(upsample: _Upsample) -> tuple[Applicability, str, str]:
    """(applicability, why not safe, how it is computed): safe only where one fixed kernel is
    exact for every input size."""
    if upsample.size_expr is None and not upsample.align and _powers_of_two(upsample.scale):
        return Applicability.SAFE, "", "a fixed-kernel transposed convolution (exact for every input size)"
    if upsample.align:
        why = "align_corners=True samples at (in-1)/(out-1), which depends on the input size"
    elif upsample.size_expr is not None:
        why = "the output size is given, so the step depends on the input size"
    elif upsample.scale is UNKNOWN:
        why = "the scale factor is not known statically"
    else:
        why = f"PyTorch's rounded 1/{upsample.scale} makes the weights vary along the image"
    reason = (f"{why}: the exported graph holds interpolation weights for the traced input size "
              "(PyTorch itself computes the same for every size)")
    return Applicability.UNSAFE, reason, "a matrix product per axis with PyTorch's weights"


def _rewrite(upsample: _Upsample, name: str) -> Callable[[cst.CSTNode], cst.CSTNode]:
    """The call becomes the helper module (``name(...)``), applied to the input for ``F.*``."""
    arguments = []
    if upsample.scale_expr is not None:
        arguments.append(f"scale_factor={code_of(upsample.scale_expr).strip()}")
    if upsample.size_expr is not None:
        arguments.append(f"size={code_of(upsample.size_expr).strip()}")
    arguments.append(f"align_corners={upsample.align}")
    module_code = f"{name}({', '.join(arguments)})"
    input_code = code_of(upsample.bound["input"]).strip() if upsample.functional else ""

    def rewrite(node: cst.CSTNode) -> cst.CSTNode:
        text = f"{module_code}({_input_of(node) or input_code})" if upsample.functional else module_code
        return replace_with(cst.parse_expression(text))(node)

    return rewrite


def _input_of(node: cst.CSTNode) -> str | None:
    """The upsampled tensor's code in a (possibly already renamed) functional call."""
    if not isinstance(node, cst.Call):
        return None
    for arg in node.args:
        if arg.keyword is not None and arg.keyword.value == "input":
            return code_of(arg.value).strip()
    for arg in node.args:
        if arg.keyword is None and not arg.star:
            return code_of(arg.value).strip()
    return None


def _powers_of_two(scale: Any) -> bool:
    values = scale if isinstance(scale, tuple) else (scale,)
    if scale is None or scale is UNKNOWN or not values or len(values) not in (1, 2):
        return False
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            return False
        factor = int(value)
        if factor < 2 or factor & (factor - 1):
            return False
    return True
