"""MC5xx: operators the measured compatibility table says fail at the target.

``modelcheck/ops/table.json`` holds what really happened to 312 probe models of the operators
vision models use, exported with the TorchScript exporter at opsets 9, 11 and 17, checked, run on
the real Caffe2 1.7.1 and on ONNX Runtime and compared with PyTorch (``python -m modelcheck.ops``;
``tests/test_ops_table.py`` re-measures a sample). This family looks every operator a model uses
up in that table, for the run's target and opset, and reports the measured outcome at the line
that wrote it: the exporter refuses it (MC501), the checker or the runtime does (MC502), or the
runtime computes something else (MC503). At caffe2 opset 9, 95 of the 312 probes fail: Caffe2
cannot broadcast ``Pow`` (``x ** 2``, ``nn.LayerNorm``), has no ``ReduceProd`` (``std``,
``var``) nor ``ReduceLogSumExp``, runs no 1-d or 3-d ``ConvTranspose``, pads only 2-d maps.

A call is matched to the probe variant that fits what is known about it (``modelcheck.ops.table``:
its deciding facts, such as ``padding='same'`` or the exponent, then literal arguments and the
input's rank); an argument that is not known statically is taken to be the plainest variant
measured, and when that variant fails while another would not, the finding says "may" and
tracing, which sees the value, settles it. Constructs another family owns (upsampling, pooling,
adaptive pooling) are left to it: their APIs are read from those families, not listed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from typing import Any, ClassVar

from modelcheck.findings import Severity
from modelcheck.ops import table as optable
from modelcheck.rules.base import Match, Rule
from modelcheck.rules.family import Family, bind_call, discover_families
from modelcheck.static.source import UNKNOWN, FileFacts, ScopedVisitor, SourceFile, bind_arguments, cst, walk
from modelcheck.targets import PROFILES, Target

NAME = "operators"
TABLE = optable.load()

#: the verdicts of a measured cell each rule reports (``modelcheck.ops.table.VERDICTS``)
EXPORT_FAILS = frozenset({"export_fails"})
RUNTIME_FAILS = frozenset({"checker_fails", "run_fails", "run_crashes"})
MISMATCH = frozenset({"mismatch"})
FAILING = EXPORT_FAILS | RUNTIME_FAILS | MISMATCH


# ----- which operators: the table's, minus what other families own --------------------------------

def _owners() -> dict[str, Family]:
    """API → the family that owns it: a construct gets that family's findings, and this family's
    only at the targets none of the owner's rules has a verdict for (:func:`deferred`)."""
    return {api: family for family in discover_families() if family.name != NAME
            for api in family.layer_apis | family.call_apis}


OWNERS = _owners()
OWNED = frozenset(OWNERS)
#: every probe of the table: an owned API's probes speak where its owner has no rule
PROBES: dict[str, optable.ProbeInfo] = dict(TABLE.probes)


def deferred(probe: optable.ProbeInfo, target: Target) -> bool:
    """Is what ``probe`` measured another family's to say at ``target``? Yes where a rule of the
    family owning one of its APIs has a verdict there and covers the probe (:attr:`Rule.covers`:
    MC2xx every interpolation at caffe2, MC207 only bilinear by a scale factor at ExecuTorch);
    elsewhere the table speaks for it (3-d pooling and adaptive max pooling at ExecuTorch, nearest
    resizing by 0.5 in LiteRT)."""
    owners = {OWNERS[api] for api in probe.apis if api in OWNERS}
    return any(rule.verdict(target) is not None and _covers(rule, probe) for owner in owners for rule in owner.rules)


def _covers(rule: Rule, probe: optable.ProbeInfo) -> bool:
    if rule.covers is None:
        return True
    return any(all(optable.same(probe.facts.get(key, _ABSENT), value) for key, value in pattern.items())
               for pattern in rule.covers)


_ABSENT = object()


def _fails_somewhere(probe: optable.ProbeInfo) -> bool:
    return any(verdict in FAILING for verdict in TABLE.row(probe.key))


def stands_for(probe: optable.ProbeInfo, api: str) -> bool:
    """Can ``probe`` be the variant a call of ``api`` is matched to? Only if it is the API's plainest
    probe or records a fact a call can agree with: ``integer arithmetic (x.long() * 3 // 2)`` lists
    ``Tensor.__mul__``, but says nothing that would tell a float multiplication from it."""
    mine = [p for p in TABLE.probes_for(api) if p.key in PROBES]
    return bool(probe.facts) or bool(set(probe.soft) - {"input_rank"}) or (bool(mine) and mine[0] is probe)


#: every API with a probe that fails in some measured cell and can stand for its calls
APIS: frozenset[str] = frozenset(
    api for probe in PROBES.values() if _fails_somewhere(probe) for api in probe.apis if stands_for(probe, api)
)


# ----- facts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OperatorFacts:
    """One operator call or layer: its API and what is known of the facts its probes are keyed on
    (``(("exponent", "integer"), ("power", 2))``; a value may be UNKNOWN)."""

    api: str
    facts: tuple[tuple[str, Any], ...] = ()
    #: False for a method or operator whose receiver may not be a tensor (``x ** 2`` in source)
    certain_api: bool = True

    @property
    def known(self) -> dict[str, Any]:
        return {key: value for key, value in self.facts if value is not UNKNOWN}

    @property
    def undecided(self) -> frozenset[str]:
        """The deciding facts (``TABLE.deciding_keys``) not known: UNKNOWN, or not read at all."""
        known = self.known
        return (frozenset(key for key, value in self.facts if value is UNKNOWN)
                | frozenset(key for key in TABLE.deciding_keys(self.api) if key not in known))

    @property
    def what(self) -> str:
        """``torch.pow (exponent='integer')``: the API with the facts that decided, unless defaults."""
        known = self.known
        if self.api == "torch.Tensor.__pow__" and "power" in known:
            return f"x ** {known['power']!r}"
        shown_keys = TABLE.deciding_keys(self.api) | {"index", "pad", "power"}
        if "power" in known:
            shown_keys -= {"exponent"}
        defaults = SIGNATURES[self.api].defaults if self.api in SIGNATURES else {}
        shown = ", ".join(f"{key}={value!r}" for key, value in known.items()
                          if key in shown_keys and defaults.get(key, _NO_DEFAULT) != value)
        return f"{short_name(self.api)} ({shown})" if shown else short_name(self.api)


_NO_DEFAULT = object()
#: how the operators written as Python syntax read in a message
_SYNTAX = {"torch.Tensor.__pow__": "x ** y", "torch.Tensor.__getitem__": "x[...]",
           "torch.Tensor.__setitem__": "x[...] = y", "torch.Tensor.__eq__": "x == y", "torch.Tensor.__ne__": "x != y"}


def short_name(api: str) -> str:
    """``torch.nn.functional.pad`` → ``F.pad``, ``torch.nn.LayerNorm`` → ``nn.LayerNorm``."""
    if api in _SYNTAX:
        return _SYNTAX[api]
    for prefix, short in (("torch.nn.functional.", "F."), ("torch.nn.", "nn."), ("torch.Tensor.", "Tensor.")):
        if api.startswith(prefix):
            return short + api[len(prefix):]
    return api


@dataclass(frozen=True)
class Signature:
    """What a call's arguments say about the facts its probes are keyed on.

    ``params`` are the positional parameter names (a tensor method's without ``self``), from each
    signature in torch 2.x; ``defaults`` the facts an absent argument means (``padding_mode``
    of ``F.conv2d``, which has none, is ``zeros``).
    """

    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)


_CONV = {"padding": 0, "dilation": 1, "padding_mode": "zeros"}
_CONV_F = Signature(("input", "weight", "bias", "stride", "padding", "dilation", "groups"), _CONV)
_CONVT = {"dilation": 1, "output_padding": 0}
_CLAMP_T, _CLAMP_M = Signature(("input", "min", "max")), Signature(("min", "max"))
_POW_T, _POW_M = Signature(("input", "exponent")), Signature(("exponent",))
_TOPK = {"largest": True}
_CHUNK = {"dim": 0}
# APIs other families own, read where the table speaks for them (:func:`deferred`)
_RESIZE = {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None}
_RESIZE_F = Signature(("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                       "antialias"), _RESIZE)
_MAX_POOL = {"padding": 0, "dilation": 1, "return_indices": False, "ceil_mode": False}
_AVG_POOL = {"padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None}
_ADAPTIVE_F, _ADAPTIVE = Signature(("input", "output_size")), Signature(("output_size",))

#: the APIs whose probes differ by a fact their arguments decide (``TABLE.deciding_keys``)
SIGNATURES: dict[str, Signature] = {
    "torch.nn.Conv2d": Signature(("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                                  "groups", "bias", "padding_mode"), _CONV),
    "torch.nn.functional.conv2d": _CONV_F, "torch.conv2d": _CONV_F,
    **{f"torch.nn.ConvTranspose{d}d": Signature(("in_channels", "out_channels", "kernel_size", "stride",
                                                 "padding", "output_padding", "groups", "bias", "dilation",
                                                 "padding_mode"), _CONVT) for d in (1, 2, 3)},
    "torch.nn.functional.conv_transpose2d": Signature(("input", "weight", "bias", "stride", "padding",
                                                       "output_padding", "groups", "dilation"), _CONVT),
    "torch.nn.functional.batch_norm": Signature(("input", "running_mean", "running_var", "weight", "bias",
                                                 "training", "momentum", "eps"), {"training": False}),
    "torch.nn.functional.pad": Signature(("input", "pad", "mode", "value"), {"mode": "constant"}),
    "torch.pow": _POW_T, "torch.Tensor.pow": _POW_M, "torch.Tensor.__pow__": _POW_M,
    "torch.topk": Signature(("input", "k", "dim", "largest", "sorted"), _TOPK),
    "torch.Tensor.topk": Signature(("k", "dim", "largest", "sorted"), _TOPK),
    "torch.chunk": Signature(("input", "chunks", "dim"), _CHUNK),
    "torch.Tensor.chunk": Signature(("chunks", "dim"), _CHUNK),
    **{f"torch.{name}": _CLAMP_T for name in ("clamp", "clip")},
    **{f"torch.Tensor.{name}": _CLAMP_M for name in ("clamp", "clip")},
    "torch.clamp_min": Signature(("input", "min")), "torch.Tensor.clamp_min": Signature(("min",)),
    "torch.clamp_max": Signature(("input", "max")), "torch.Tensor.clamp_max": Signature(("max",)),
    "torch.Tensor.to": Signature(("dtype",)),
    "torch.Tensor.__getitem__": Signature(("index",)),
    "torch.Tensor.__setitem__": Signature(("index", "value")),
    "torch.arange": Signature(("start", "end", "step")), "torch.linspace": Signature(("start", "end", "steps")),
    "torch.nn.functional.interpolate": _RESIZE_F, "torch.nn.functional.upsample": _RESIZE_F,
    "torch.nn.Upsample": Signature(("size", "scale_factor", "mode", "align_corners", "recompute_scale_factor"),
                                   _RESIZE),
    **{f"torch.nn.{name}Pool{d}d": Signature(("kernel_size", "stride", "padding", "dilation", "return_indices",
                                               "ceil_mode"), _MAX_POOL) for name in ("Max",) for d in (1, 2, 3)},
    **{f"torch.nn.functional.max_pool{d}d": Signature(("input", "kernel_size", "stride", "padding", "dilation",
                                                       "ceil_mode", "return_indices"), _MAX_POOL) for d in (1, 2, 3)},
    **{f"torch.nn.AvgPool{d}d": Signature(("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                           "divisor_override"), _AVG_POOL) for d in (1, 2, 3)},
    **{f"torch.nn.functional.avg_pool{d}d": Signature(("input", "kernel_size", "stride", "padding", "ceil_mode",
                                                       "count_include_pad", "divisor_override"), _AVG_POOL)
       for d in (1, 2, 3)},
    **{f"torch.nn.functional.adaptive_{kind}_pool{d}d": _ADAPTIVE_F for kind in ("avg", "max") for d in (1, 2, 3)},
    **{f"torch.nn.Adaptive{kind}Pool{d}d": _ADAPTIVE for kind in ("Avg", "Max") for d in (1, 2, 3)},
}
#: the dtype a conversion method produces
_METHOD_DTYPES = {"half": "float16", "float": "float32", "double": "float64", "long": "int64", "int": "int32",
                  "bfloat16": "bfloat16"}
_DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64", "long": "int64", "int": "int32"}


class Tensor:
    """A live tensor argument as the fact derivation sees it (shape and dtype), or one known only
    to be a tensor."""

    def __init__(self, shape: tuple[int, ...] = (), dtype: str = "", is_bool: bool = False) -> None:
        self.shape, self.dtype, self.is_bool = shape, dtype, is_bool


def _dtype_name(value: Any) -> Any:
    """``torch.float16``, ``torch.half`` (a qualified name or a live dtype) → ``float16``; else UNKNOWN."""
    if isinstance(value, Tensor):
        return value.dtype or UNKNOWN
    text = str(value)
    if not text.startswith("torch."):
        return UNKNOWN
    name = text[len("torch."):]
    return _DTYPE_ALIASES.get(name, name)


def _scalar(value: Any) -> Any:
    """``(2, 2)`` → ``2``: a per-dimension value the probes record once."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return value[0]
    return value


def _exponent(value: Any) -> Any:
    if value is UNKNOWN:
        return UNKNOWN
    if isinstance(value, Tensor):
        return "tensor"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return UNKNOWN
    return "integer" if float(value).is_integer() else "fraction"


def _bounds(values: Mapping[str, Any]) -> Any:
    given = {name: values[name] for name in ("min", "max") if values.get(name) is not None}
    if any(value is UNKNOWN for value in given.values()):
        return UNKNOWN
    if any(isinstance(value, Tensor) for value in given.values()):
        return "tensor"
    return {("max", "min"): "both", ("min",): "min", ("max",): "max"}.get(tuple(sorted(given)), UNKNOWN)


def _even(values: Mapping[str, Any]) -> Any:
    """``chunk``'s ``even``: True when the size divides; False only in the case the probe measured,
    fewer chunks than asked for (3 of 4 channels make 2); 3 of 5 (2, 2, 1) exports at opset 9
    (measured by hand), so an uneven split into every chunk is not that probe: UNKNOWN."""
    tensor, chunks, dim = values.get("input"), values.get("chunks"), values.get("dim", 0)
    if not isinstance(tensor, Tensor) or not isinstance(chunks, int) or not isinstance(dim, int) or chunks < 1:
        return UNKNOWN
    if not -len(tensor.shape) <= dim < len(tensor.shape):
        return UNKNOWN
    size = tensor.shape[dim]
    if size % chunks == 0:
        return True
    step = -(-size // chunks)
    return False if -(-size // step) < chunks else UNKNOWN


_INDEX_RANK = ("slice", "int", "step", "list", "mask")  # a mixed index is its strongest kind


def _index_kind(index: Any) -> Any:
    """What kind of index ``x[index]`` is (the soft fact ``index`` of the ``Tensor[...]`` probes)."""
    if index is UNKNOWN:
        return UNKNOWN
    kinds = {"slice"}
    for item in index if isinstance(index, tuple) else (index,):
        if isinstance(item, Tensor):
            kinds.add("mask" if item.is_bool else "list")
        elif isinstance(item, list):
            kinds.add("list")
        elif isinstance(item, slice):
            kinds.add("step" if item.step not in (None, 1) else "slice")
        elif isinstance(item, int) and not isinstance(item, bool):
            kinds.add("int")
    return max(kinds, key=_INDEX_RANK.index)


def _dynamic(values: Mapping[str, Any]) -> Any:
    """A range whose bounds are tensors (a traced shape), not numbers: True, False, or UNKNOWN."""
    bounds = [values[key] for key in ("start", "end", "step", "steps") if key in values]
    if not bounds or any(value is UNKNOWN for value in bounds):
        return UNKNOWN
    return any(isinstance(value, Tensor) for value in bounds)


def _resize_by(values: Mapping[str, Any]) -> Any:
    """``scale_factor``, ``size`` (literal sizes) or ``size_of_tensor`` (sizes that are traced
    tensors, ``y.shape[-2:]`` under ``torch.jit.trace``): how an interpolation gets its output size."""
    size, scale = values.get("size", UNKNOWN), values.get("scale_factor", UNKNOWN)
    if scale is UNKNOWN and size is UNKNOWN:
        return UNKNOWN
    if scale not in (None, UNKNOWN):
        return "scale_factor"
    sizes = size if isinstance(size, (list, tuple)) else (size,)
    if any(isinstance(s, Tensor) for s in sizes):
        return "size_of_tensor"
    return "size" if size is not None and all(isinstance(s, int) for s in sizes) else UNKNOWN


def _sizes(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _global(output_size: Any) -> Any:
    """Adaptive pooling to 1 in every dimension (``GlobalAveragePool``)."""
    sizes = _sizes(output_size)
    if output_size is UNKNOWN or not all(isinstance(s, int) or s is None for s in sizes):
        return UNKNOWN
    return all(s == 1 for s in sizes)


def _divides(output_size: Any, tensor: Any) -> Any:
    """Each pooled input dimension a multiple of its output size (known only from a traced tensor)."""
    sizes = _sizes(output_size)
    if not isinstance(tensor, Tensor) or output_size is UNKNOWN or not all(isinstance(s, int) or s is None
                                                                           for s in sizes):
        return UNKNOWN
    spatial = tensor.shape[-len(sizes):] if len(sizes) > 1 else tensor.shape[-1:]
    if len(sizes) == 1 and len(tensor.shape) > 3:  # one size for every spatial dimension
        spatial, sizes = tensor.shape[2:], sizes * (len(tensor.shape) - 2)
    return all(s is None or (s > 0 and i % s == 0) for i, s in zip(spatial, sizes, strict=False))


def _dtype_of_to(values: Mapping[str, Any], extra: Sequence[Any]) -> Any:
    """The dtype ``x.to(...)`` converts to: a dtype or a tensor among its arguments, else none
    (a device move, ``unchanged``)."""
    for value in (values.get("dtype"), *extra):
        if value is UNKNOWN:
            return UNKNOWN
        name = _dtype_name(value) if value is not None else UNKNOWN
        if name is not UNKNOWN:
            return name
    return "unchanged"


#: fact key → how it follows from a call's bound values (UNKNOWN when it does not)
DERIVE: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "padding": lambda v: _scalar(v.get("padding", UNKNOWN)),
    "padding_mode": lambda v: v.get("padding_mode", UNKNOWN),
    "dilation": lambda v: _scalar(v.get("dilation", UNKNOWN)),
    "output_padding": lambda v: _scalar(v.get("output_padding", UNKNOWN)),
    "training": lambda v: v.get("training", UNKNOWN),
    "mode": lambda v: v.get("mode", UNKNOWN),
    "exponent": lambda v: _exponent(v.get("exponent", UNKNOWN)),
    "largest": lambda v: v.get("largest", UNKNOWN),
    "even": _even,
    "negative_dim": lambda v: v["dim"] < 0 if isinstance(v.get("dim"), int) and not isinstance(v["dim"], bool)
    else UNKNOWN,
    "bounds": _bounds,
    **{key: (lambda v, key=key: v.get(key, UNKNOWN))
       for key in ("ceil_mode", "count_include_pad", "divisor_override", "return_indices", "align_corners")},
    "resize_by": lambda v: _resize_by(v),
    "dynamic": lambda v: _dynamic(v),
    "global": lambda v: _global(v.get("output_size", UNKNOWN)),
    "divides": lambda v: _divides(v.get("output_size", UNKNOWN), v.get("input", UNKNOWN)),
}


def derive(api: str, values: Mapping[str, Any], extra: Sequence[Any] = ()) -> tuple[tuple[str, Any], ...]:
    """The facts of one call of ``api`` from its bound argument values (literals, UNKNOWN, or
    :class:`Tensor` for live tensors); ``extra`` holds positional values past the signature."""
    facts: dict[str, Any] = {}
    for key in sorted(TABLE.deciding_keys(api) | (_fact_keys(api) & DERIVE.keys())):
        facts[key] = DERIVE[key](values) if key in DERIVE else UNKNOWN
    method = api.rsplit(".", 1)[-1]
    if "dtype" in facts:
        facts["dtype"] = _METHOD_DTYPES.get(method) or _dtype_of_to(values, extra)
    if "pad" in values and values["pad"] is not UNKNOWN:
        facts["pad"] = tuple(values["pad"]) if isinstance(values["pad"], (list, tuple)) else values["pad"]
    if "index" in values:
        facts["index"] = _index_kind(values["index"])
    if facts.get("exponent") in ("integer", "fraction"):
        facts["power"] = values["exponent"]
    for key in _argument_keys(api):  # literal arguments break ties between probes (``output_padding=1``)
        value = values.get(key, UNKNOWN)
        if key not in facts and value is not UNKNOWN and value is not None and not isinstance(value, Tensor):
            facts[key] = _scalar(tuple(value) if isinstance(value, list) else value)
    return tuple(facts.items())


@cache
def _fact_keys(api: str) -> frozenset[str]:
    """The facts the probes of ``api`` record: those :data:`DERIVE` can read from a call are read even
    where they decide nothing among its probes (``dynamic``: ``arange(10)`` is not ``arange(x.shape[-1])``)."""
    return frozenset(key for probe in TABLE.probes_for(api) for key in probe.facts)


@cache
def _argument_keys(api: str) -> tuple[str, ...]:
    """The literal arguments the probes of ``api`` were measured with (``kernel_size``, ``output_padding``)."""
    return tuple(sorted({key for probe in TABLE.probes_for(api) for key in probe.args}))


# ----- what the table says about one construct at one target -----------------------------------

@dataclass(frozen=True)
class Outcome:
    """The measured cell of the probe a construct was matched to, and whether the match is sure."""

    cell: optable.Cell
    probe: optable.ProbeInfo
    certain: bool


def measured_cells(target: Target) -> tuple[tuple[str, int], ...]:
    """The table's cells a target's smoke test runs: its own, at its opset (a target with its own
    converter has one, opset 0), and those of each other measured runtime among its stages at that
    opset (caffe2 also runs ONNX Runtime). An ONNX target counts only with the TorchScript exporter
    the table used; none at an opset the table did not measure."""
    profile = PROFILES.get(target.name)
    own = (target.name, target.opset)
    if profile is None or own not in optable.CELLS or (target.onnx and target.exporter != "torchscript"):
        return ()
    stages = ("export", *profile.stage_names())
    return (own, *((name, opset) for name, opset in optable.CELLS
                   if (name, opset) != own and opset == target.opset and opset and name in PROFILES
                   and PROFILES[name].runtime in stages))


def _fails(probe: optable.ProbeInfo, name: str, opset: int) -> bool:
    cell = TABLE.cell(probe.key, name, opset)
    return cell is not None and cell.exact and cell.verdict in FAILING


def outcome(facts: OperatorFacts, name: str, opset: int) -> Outcome | None:
    """What happened to the probe variant ``facts`` match at the cell ``name/opset``, if it failed.

    The variant is the best match on the known facts (the plainest among equals). A match on no
    fact at all while the facts ruled the API's other probes out is no evidence (a float
    ``x * y`` is not the ``integer arithmetic`` probe). The outcome is certain when every variant
    the known facts allow fails there too, or when no deciding fact is unknown and the call states
    the variant's literal arguments (``ConvTranspose2d(3, 2, 1, output_padding=1)``, which LiteRT
    does not convert, where ``output_padding=0`` would match it only as the nearest variant).
    """
    mine = [p for p in TABLE.probes_for(facts.api) if p.key in PROBES]
    found = [(score, p) for score, p in TABLE.candidates(facts.api, facts.known) if p.key in PROBES]
    if not found:
        return None
    best = found[0][1]
    if len(found) < len(mine) and not best.facts and not set(best.soft) - {"input_rank"}:
        return None
    if _special_case(best, facts, mine) or _scalar_call(facts, found):
        return None
    cell = TABLE.cell(best.key, name, opset)
    if cell is None or not cell.exact or cell.verdict not in FAILING or at_the_boundary(cell):
        return None
    every_variant_fails = all(_fails(p, name, opset) for _, p in found)
    certain = facts.certain_api and (not facts.undecided or every_variant_fails)
    if certain and not every_variant_fails and not _arguments_agree(best, facts.known):
        certain = False  # the nearest measured variant differs in an argument, and another one passes
    return Outcome(cell, best, certain)


def _special_case(probe: optable.ProbeInfo, facts: OperatorFacts, probes: Sequence[optable.ProbeInfo]) -> bool:
    """Was ``probe`` measured on a value of a fact the call does not know, and no probe of the API on
    any other? Then it stands for a special case the call may well not be (``reshape`` to sizes read
    from ``x.shape``, ``dynamic``, which coremltools fails on, for a ``reshape(1, -1)`` whose sizes
    tracing sees only as numbers): no claim."""
    return any(value is UNKNOWN and key in probe.facts and len({repr(optable.plain(p.facts.get(key)))
                                                                  for p in probes}) < 2
               for key, value in facts.facts)


def _scalar_call(facts: OperatorFacts, found: Sequence[tuple[int, optable.ProbeInfo]]) -> bool:
    """A traced call on 0-dim tensors (``c // self.heads`` with ``c`` from ``x.shape``: shape
    arithmetic, which static-shape converters fold away) where every candidate probe was measured on
    tensors of some rank and the best agrees with no fact of the call: the probes say nothing about
    it, so no claim (a held-out attention block drew false MC501/MC503 at litert and ncnn, which both
    ran it right). ``torch.linspace(-1, 1, h)`` with a traced ``h`` is no such call: its probe was
    measured on exactly that (``dynamic``)."""
    best = found[0][1]
    return (facts.known.get("input_rank") == 0 and all(probe.soft.get("input_rank", 0) > 0 for _, probe in found)
            and not any(key in best.facts for key in facts.known))


#: a mismatch in the number of outputs: the probe's boundary (an input used only for its shape came
#: back as an output), not what the operator computes
_BOUNDARY = re.compile(r"^\d+ output\(s\), PyTorch has \d+")


def at_the_boundary(cell: optable.Cell) -> bool:
    """Did the cell fail at the probe's inputs and outputs rather than in the operator? No evidence
    then (``F.interpolate(size=y.shape[-2:])`` at ncnn: 2 outputs where PyTorch has 1, while a
    held-out decoder with the same call inside ran right)."""
    return cell.verdict == "mismatch" and bool(_BOUNDARY.match(cell.error))


def _arguments_agree(probe: optable.ProbeInfo, known: Mapping[str, Any]) -> bool:
    """Does the call state every literal argument the probe was measured with, at the same value?"""
    return all(key in known and optable.same(known[key], value) for key, value in probe.args.items())


def _version(key: str) -> str:
    return TABLE.versions.get(key, "").split("+")[0]


def runtime_label(name: str) -> str:
    """``Caffe2 (torch 1.7.1)``, ``ONNX Runtime 1.32.0``, ``LiteRT (litert-torch 0.10.0, …)``: a cell's
    runtime as measured."""
    profile = PROFILES[name]
    if profile.env is not None:
        return f"{profile.runtime_label} ({_env(name)})"
    version = _version(profile.runtime)
    if version.lower().startswith(profile.runtime):
        version = version[len(profile.runtime):].strip()
    return f"{profile.runtime_label} {version}".strip()


def _env(name: str) -> str:
    """The packages a target measured in its own environment ran on, without torch (said once, in docs)."""
    return ", ".join(p for p in TABLE.versions.get(name, "?").split(", ") if not p.startswith("torch "))


def _clip(text: str, limit: int = 150) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def said(found: Outcome) -> str:
    """What the cell says happened, in the words of the exporter or runtime that said it."""
    cell = found.cell
    error = _clip(cell.error)
    if cell.failed_op and cell.failed_op not in error and not cell.failed_op.startswith("aten::"):
        error += f" (ONNX {cell.failed_op})"
    if cell.verdict == "export_fails":
        profile = PROFILES[cell.target]
        if not profile.onnx:
            return f"{profile.export_label} ({_env(cell.target)}) fails: {error}"
        return f"the TorchScript exporter (torch {_version('torch')}) fails at opset {cell.opset}: {error}"
    if cell.verdict == "checker_fails":
        return f"the ONNX checker (onnx {_version('onnx')}) rejects it: {error}"
    runtime = runtime_label(cell.target)
    if cell.verdict == "mismatch":
        return f"{runtime} runs it and computes something else: {error}"
    return f"{runtime} {'crashes on' if cell.verdict == 'run_crashes' else 'fails to run'} it: {error}"


def message(facts: OperatorFacts, found: Sequence[Outcome]) -> str:
    """One finding's message: the measured outcomes, the probe they were measured on, how sure."""
    first = found[0]
    where = f"measured on `{first.probe.key}`" + (f" at opset {first.cell.opset}" if first.cell.opset else "")
    text = "; ".join(dict.fromkeys(said(one) for one in found))
    if all(one.certain for one in found):
        return f"{facts.what}: {text} ({where})"
    if not facts.certain_api:
        doubt = "if its operand is a tensor"
    else:
        doubt = f"if it is that variant ({', '.join(sorted(facts.undecided))} not known statically)"
    return f"{facts.what} may not survive, {doubt}: {text} ({where})"


#: a fix the table shows is worth it: the API's literal exponent, and the probe of what ``--fix``
#: writes instead (``x ** 2`` → ``x * x``, which is what ``torch.square`` exports: ``Mul``)
SQUARE_FIX = (2, "torch.square(x)")
POW_APIS = frozenset({"torch.pow", "torch.Tensor.pow", "torch.Tensor.__pow__"})


def square_fixable(facts: OperatorFacts, found: Outcome) -> bool:
    """Is this a ``Pow`` by the literal 2 that fails where the measured replacement runs?"""
    power, replacement = SQUARE_FIX
    if facts.api not in POW_APIS or facts.known.get("power") != power or found.cell.failed_op != "Pow":
        return False
    return TABLE.probes.get(replacement) is not None and not _fails(TABLE.probes[replacement], found.cell.target,
                                                                     found.cell.opset)


# ----- the rules --------------------------------------------------------------------------------

class OperatorRule(Rule):
    """A rule whose claim depends on the target: what the table measured there (:meth:`match_at`)."""

    #: the measured verdicts (``modelcheck.ops.table.VERDICTS``) this rule reports
    verdicts: ClassVar[frozenset[str]]

    def verdict(self, target: Target) -> Severity | None:
        return Severity.ERROR if measured_cells(target) else None

    def match(self, facts: OperatorFacts) -> Match | None:
        """Without a target there is no measured cell to claim anything from."""
        return None

    def match_at(self, facts: OperatorFacts, target: Target) -> Match | None:
        """The claim at one target: the measured outcomes of this rule's kind in its cells, but for
        those another family's rule decides there (:func:`deferred`)."""
        found = [one for name, opset in measured_cells(target)
                 if (one := outcome(facts, name, opset)) is not None and not deferred(one.probe, target)]
        if any(one.cell.verdict in EXPORT_FAILS for one in found):  # nothing runs after a failed export
            found = [next(one for one in found if one.cell.verdict in EXPORT_FAILS)]
        mine = [one for one in found if one.cell.verdict in self.verdicts]
        if not mine:
            return None
        return Match(message(facts, mine), certain=all(one.certain for one in mine),
                     fixable=any(square_fixable(facts, one) for one in mine))


def _runtime_stages() -> tuple[str, ...]:
    """The smoke-test stages after the export of every target the table measured (``caffe2``,
    ``onnxruntime``, ``ort_format``, ``executorch``, ``litert``, ``ncnn``, …)."""
    names = dict.fromkeys(name for name, _ in optable.CELLS if name in PROFILES)
    return tuple(dict.fromkeys(stage for name in names for stage in PROFILES[name].stage_names()
                               if stage not in ("onnx_check", "mobile_usability", "second_size")))


class OperatorFailsExport(OperatorRule):
    """## What it does
    Looks up every operator call and layer (`torch.einsum`, `F.grid_sample`, `torch.cumsum`,
    `Tensor.unflatten`, `x[..., ::2, ::2]`, `nn.ChannelShuffle`, ...) in the operator
    compatibility table shipped with modelcheck, for the run's target and opset, and reports
    those whose probe the target's exporter or converter refused there: the TorchScript exporter
    for caffe2, onnx and ort-mobile; ExecuTorch's `torch.export` + XNNPACK lowering, LiteRT's
    `litert_torch.convert`, pnnx for ncnn and `coremltools.convert` for the others. Calls a
    static read can name (`F.xxx(...)`, `torch.xxx(...)`, `nn.Xxx(...)`, unambiguous tensor
    methods) are flagged before anything runs; tracing looks up every call a model makes, with
    its real arguments, at the line that made it. Upsampling, pooling and adaptive pooling are
    their own families' (MC2xx, MC3xx, MC6xx) wherever one of their rules decides the construct
    at the target (`Rule.covers`); elsewhere (3-d pooling or adaptive max pooling at ExecuTorch)
    the table speaks for them too.

    ## Why is this bad?
    The export stops with the exporter's error, so there is no model to deploy: at opset 9,
    `torch.einsum`, `F.scaled_dot_product_attention`, `F.grid_sample`, `torch.cumsum`,
    `torch.flip`, `torch.tile`, `torch.round` and stride slicing (`x[..., ::2, ::2]`) all fail
    ("Exporting the operator 'aten::einsum' to ONNX opset version 9 is not supported"); most
    export from opset 11 or 17. The message quotes the exporter's measured error and names the
    probe it was measured on. Measured at ExecuTorch 1.4.1: adaptive max pooling is not in the
    Core ATen opset its export takes, `max(dim, keepdim=True)` fails XNNPACK's lowering; at
    LiteRT (litert-torch 0.10.0): adaptive max pooling, antialiased resizing, boolean-mask
    indexing, `nonzero`, `sort`/`argsort`, `div(rounding_mode='floor')` and
    `ConvTranspose2d(3, 2, 1, output_padding=1)` do not convert; at Core ML (coremltools 9.0 with
    numpy 2.4): 44 probes, among them shape arithmetic such as `x.view(x.size(0), -1)`
    (`aten::Int`, apple/coremltools#2633), bicubic and 3-d resizing, `prod`, `chunk`, circular
    padding. Only measured cells count: caffe2 at opsets 9 and 11, onnx at 9, 11 and 17,
    ort-mobile at 17 (TorchScript exporter), and executorch, litert, ncnn and coreml through
    their own converters; at another opset or with the dynamo exporter there is no finding. An
    argument not known statically is taken to be the plainest variant measured; when that variant
    fails and another would not, the finding says "may" (one severity lower) and tracing settles
    it. A probe measured on a special case the call is not known to be (a `reshape` to sizes read
    from `x.shape`, where the table has no `reshape` to plain numbers) makes no claim: coremltools
    fails on the one and not the other, and tracing sees both as numbers.

    ## Fix safety
    There is no automatic fix: the equivalent depends on the operator (`torch.bmm` for a batched
    matrix product written as `einsum`, a higher opset where the target supports it).
    """

    code = "MC501"
    name = "operator-fails-export"
    summary = "an operator the target's exporter or converter refuses (measured)"
    verdicts = EXPORT_FAILS
    predicts = (("export", "failed", Severity.WARNING),)
    bad_example = "import torch\n\n\ndef attend(a, b):\n    return torch.einsum('bik,bkj->bij', a, b)\n"
    good_example = "import torch\n\n\ndef attend(a, b):\n    return torch.bmm(a, b)\n"


class OperatorFailsInRuntime(OperatorRule):
    """## What it does
    Reports operators whose probe exported but was rejected by the ONNX checker or failed (or
    crashed) in the target's runtime at the run's opset, as measured for the operator
    compatibility table: for caffe2 in Caffe2 1.7.1 and, since its smoke test runs it too, in
    ONNX Runtime; for onnx in ONNX Runtime; for ort-mobile in ONNX Runtime from the `.ort` file;
    for executorch, litert and ncnn in `executorch.runtime`, LiteRT's interpreter and ncnn.
    Recognised as MC501 says.

    ## Why is this bad?
    The model exports and then does not run where it is going. Measured at caffe2 opset 9:
    Caffe2 cannot broadcast `Pow`, so `x ** 2`, `torch.pow(x, 0.5)`, `nn.LayerNorm`,
    `nn.LPPool2d` and `torch.cdist` fail ("[enforce fail at pow_op.h:97] A.sizes() ==
    B.sizes() ... Dimension mismatch"); it has no `ReduceProd` (`prod`, `std`, `var`) nor
    `ReduceLogSumExp`; it runs no 1-d or 3-d `ConvTranspose`; it pads only 2-d maps
    (`F.pad` over channels, 1-d reflection padding); float16 casts fail; and the checker
    rejects `==`/`!=` on floats. The message quotes the runtime's measured error. Only measured
    cells count, as MC501 says.

    ## Fix safety
    `x ** 2`, `x.pow(2)` and `torch.pow(x, 2)` become `x * x` when the operand is a name or an
    attribute (right for plain numbers too), and `torch.square(...)` for any other operand known
    to be a tensor (a `torch.pow` call, or tracing saw it; otherwise it is left alone). Both
    export as `Mul`, which Caffe2 runs (measured: `torch.square(x)`, `torch.mul`), and only where
    the table says so is the fix offered. PyTorch computes `pow(x, 2)` as `x * x` and
    `torch.square` as `pow(x, 2)`, so a model built from the file must give bit-identical
    outputs (checked; without a model the fix is held back). Safe: the same for every input
    size. Other operators have no automatic fix: `x ** 0.5` is not bit for bit `x.sqrt()`, and a
    `LayerNorm` written with means is not bit for bit the fused one.
    """

    code = "MC502"
    name = "operator-fails-in-runtime"
    summary = "an operator that exports but that the ONNX checker or the target's runtime rejects (measured)"
    verdicts = RUNTIME_FAILS
    predicts = (("onnx_check", "failed", Severity.WARNING),
                *((stage, status, Severity.WARNING) for stage in _runtime_stages() for status in ("failed", "crashed")))
    bad_example = "import torch\n\n\ndef energy(x):\n    return torch.pow(x, 2).sum()\n"
    good_example = "def energy(x):\n    return (x * x).sum()\n"


class OperatorComputesDifferently(OperatorRule):
    """## What it does
    Reports operators whose probe ran in the target's runtime at the run's opset but gave
    outputs that differ from PyTorch beyond the table's tolerance, as measured for the operator
    compatibility table. Recognised as MC501 says.

    ## Why is this bad?
    Nothing fails: the deployed model silently computes something else. Measured at caffe2
    opset 9: `nn.Conv2d(..., padding='same')` (Caffe2 pads differently), `torch.sort`,
    `F.cosine_similarity` (0.96 of the output's scale), `nn.ConvTranspose2d(dilation=2)`,
    `torch.clamp` with tensor bounds (NaNs where PyTorch has none). The message quotes the
    measured difference. Only measured cells count, as MC501 says.

    ## Fix safety
    There is no automatic fix: write the computation so it exports as operators the runtime
    computes the same (`padding=k // 2` for an odd kernel instead of `'same'`), and check it
    with the smoke test.
    """

    code = "MC503"
    name = "operator-computes-differently"
    summary = "an operator the target's runtime runs but computes differently from PyTorch (measured)"
    verdicts = MISMATCH
    predicts = tuple((stage, "mismatch", Severity.WARNING) for stage in _runtime_stages())
    bad_example = "import torch.nn as nn\n\nconv = nn.Conv2d(8, 8, 3, padding='same')\n"
    good_example = "import torch.nn as nn\n\nconv = nn.Conv2d(8, 8, 3, padding=1)\n"


RULES: tuple[Rule, ...] = (OperatorFailsExport(), OperatorFailsInRuntime(), OperatorComputesDifferently())


# ----- static recognition -----------------------------------------------------------------------

def _is_class(api: str) -> bool:
    """``torch.nn.LayerNorm``, ``torchvision.ops.DeformConv2d``: a layer, built where it is written."""
    return api.rsplit(".", 1)[-1][:1].isupper()


#: method names other types have too (lists sort, numpy arrays have ``std``/``var``/``prod``/
#: ``cumsum``/``argsort``/``clip``/``round``): ``x.sort()`` in source may be anything, so only
#: tracing looks those up
AMBIGUOUS_METHODS = frozenset(
    {name for kind in (list, tuple, dict, set, str, bytes, int, float, complex) for name in dir(kind)}
    | {"std", "var", "prod", "cumsum", "argsort", "sort", "clip", "round", "max", "min", "mean", "sum", "take",
       "repeat", "fill", "astype", "flatten", "reshape", "transpose", "squeeze", "nonzero", "all", "any", "copy",
       "view", "dot", "cumprod", "diagonal", "partition", "put", "resize", "trace", "argmax", "argmin"}
)
#: what the static pass recognises: functions and layers by qualified name, unambiguous tensor
#: methods by name, and ``**``
STATIC_CALLS: tuple[str, ...] = tuple(sorted(api for api in APIS if not api.startswith("torch.Tensor.")))
STATIC_METHODS: frozenset[str] = frozenset(
    api.rsplit(".", 1)[-1] for api in APIS if api.startswith("torch.Tensor.") and not api.endswith("__")
) - AMBIGUOUS_METHODS


_NESTED = r"\((?:[^()]|\([^()]*\))*\)"  # a parenthesized group, parentheses two deep inside
_ARGS = rf"(?:[^()]|{_NESTED})*?"  # the arguments before the one looked for (a call's ``)`` ends them)
_ARG = rf"(?:[^(),]|{_NESTED})*"  # one argument


def _decided_by_arguments(api: str) -> bool:
    """Does a call of ``api`` fail only with certain arguments (its plainest probe passes everywhere)?"""
    mine = [probe for probe in TABLE.probes_for(api) if probe.key in PROBES]
    return bool(mine) and set(TABLE.row(mine[0].key)) == {"ok"}


def _argument_patterns(api: str) -> tuple[set[str], set[str]]:
    """Where in masked source an argument that makes ``api`` fail can be: a string value
    (``padding='same'``) as a string of its length, by keyword or position (strings are masked to
    underscores; prefix letters stay), or as a name (``torch.float16``, ``torch.half``); another
    value after its keyword (``dilation=``) or at its position (as many arguments before it).
    Returns the patterns that may stand after other arguments, and those of positions."""
    patterns: set[str] = set()
    positions: set[str] = set()
    plainest = next(probe for probe in TABLE.probes_for(api) if probe.key in PROBES)
    params = SIGNATURES[api].params if api in SIGNATURES else ()
    for key in TABLE.deciding_keys(api):
        for probe in TABLE.probes_for(api):
            value = probe.facts.get(key)
            if probe.key not in PROBES or value in (None, plainest.facts.get(key)) or not _fails_somewhere(probe):
                continue
            if isinstance(value, str):
                names = [value, *(alias for alias, name in _DTYPE_ALIASES.items() if name == value)]
                patterns |= {rf"(?<!\w)[rRuU]?_{{{len(value) + 2}}}(?!\w)", *(rf"\b{re.escape(n)}\b" for n in names)}
            else:
                patterns.add(rf"\b{key}\s*=")
                if key in params:
                    positions.add(rf"(?:{_ARG},){{{params.index(key)}}}")
    return patterns, positions


_TOKEN = re.compile(r"[A-Za-z_]\w*")
_FOLLOWED = re.compile(r"\s*(\(|,|=(?!=)|)")  # what follows a name: a call, the next argument, a binding
_TARGETS = re.compile(r"[ \t]*((?:[A-Za-z_]\w*[ \t]*(?::[^=\n]*)?=(?!=)[ \t]*)+)")  # ``a = b = ``, ``a: T = ``
_TARGET = re.compile(r"([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=")
_MODULE_TARGETS = re.compile(r"^((?:[A-Za-z_]\w*[ \t]*(?::[^=\n]*)?=(?!=)[ \t]*)+)", re.MULTILINE)
_RENAME = re.compile(r"\s+as\s+([A-Za-z_]\w*)")
_CALL_ARGUMENTS = re.compile(rf"(?:[^()]|{_NESTED})*")
_FIRST_ARGUMENT = re.compile(r"\(\s*(?:[A-Za-z_]\w*\s*\.\s*)*$")


@lru_cache(maxsize=512)
def _word(name: str) -> re.Pattern[str]:
    return re.compile(re.escape(name) + r"(?!\w)")


class Trigger:
    """The pre-screen's test (``Family.trigger``: ``search`` and ``finditer`` as a compiled pattern
    has them): where ``extract`` may find something, which is where ``FileFacts.api_call`` may
    name an API of this family, or a tensor method, or a ``**``.

    An API goes by its last name: a call of it (``LayerNorm(``, ``.flip(``); the function or layer
    passed on (``partial(nn.LayerNorm, eps=1e-6)``); and the local names an assignment
    (``norm = norm or nn.LayerNorm``) or an import (``from torch import pow as power``) gives it,
    their calls and mentions too. An argument-decided API (``nn.Conv2d(3, 8, 3)`` is on every line
    of a CNN and fails nowhere) counts only with an argument after it that may make it fail
    (``padding_mode=``, or a module-level name: ``value`` reads constants). The words of a file are
    found with one ``findall`` and a set look-up, then each API word present is looked for alone:
    an alternation of 120 names in one regex took the pre-screen 3 times as long on timm's and
    torchvision's models."""

    _POWER = re.compile(r"[\w)\]]\s*\*\*")

    def __init__(self, calls: frozenset[str], values: frozenset[str], arguments: Mapping[str, re.Pattern[str]]
                 ) -> None:
        #: names whose every call may fail; the API names (not methods) among them and ``arguments``,
        #: which count passed on too; argument-decided names and where their failing arguments are
        self.calls, self.values, self.arguments = calls, values, dict(arguments)
        self.words = calls | frozenset(self.arguments)

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        scan = _Scan(self, text)
        for word in sorted(self.words.intersection(_TOKEN.findall(text))):
            yield from scan.mentions(word, word)
        for alias, word in list(scan.aliases.items()):
            if alias not in self.words:
                yield from scan.mentions(alias, word)
        yield from self._POWER.finditer(text)

    def search(self, text: str) -> re.Match[str] | None:
        return next(self.finditer(text), None)


@dataclass
class _Scan:
    """One file's text read by a :class:`Trigger`."""

    trigger: Trigger
    text: str
    aliases: dict[str, str] = field(default_factory=dict)  # a local name → the API name it stands for

    def mentions(self, word: str, api: str) -> Iterator[re.Match[str]]:
        """The places where ``word``, standing for the API name ``api``, may be that API called or
        passed on; notes the local names it is given in ``aliases``."""
        text, trigger = self.text, self.trigger
        decided = api in trigger.arguments and api not in trigger.calls
        for match in _word(word).finditer(text):
            start = match.start()
            if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
                continue  # the end of a longer word
            follows = _FOLLOWED.match(text, match.end())
            after = follows.group(1)
            if after == "=":
                continue  # a keyword, a parameter or a target: not a use
            if after != "(" and self._aliased(match, api):
                yield match  # the alias's line: a class body keeps only its hot statements
            elif after != "(" and not ((api in trigger.values or word != api) and _passed_on(text, start)):
                continue  # a parameter's default, a keyword argument, an isinstance test: never called here
            elif not decided or (after in ("(", ",") and self._fails_with(api, follows.end())):
                yield match

    def _fails_with(self, api: str, start: int) -> bool:
        """May the arguments from ``start`` on make the argument-decided ``api`` fail?"""
        if self.trigger.arguments[api].match(self.text, start):
            return True
        arguments = _CALL_ARGUMENTS.match(self.text, start).group()
        return not self.constants.isdisjoint(_TOKEN.findall(arguments))

    @cached_property
    def constants(self) -> frozenset[str]:
        """The names bound at module level, which ``FileFacts.value`` reads as constants."""
        return frozenset(name for targets in _MODULE_TARGETS.findall(self.text) for name in _TARGET.findall(targets))

    def _aliased(self, match: re.Match[str], api: str) -> bool:
        """Does the statement around a mention of an API give it local names (``norm = nn.LayerNorm``,
        ``import ... pow as power``)? Notes them in ``aliases``. Only a value's alternatives are
        aliases (``FileFacts.api_of``): the mention stands outside brackets after the ``=``; and a
        line that ends in a comma or closes more brackets than it opens holds a parameter or a
        keyword argument."""
        text = self.text
        names: list[str] = []
        line_start = text.rfind("\n", 0, match.start()) + 1
        targets = _TARGETS.match(text, line_start)
        if targets is not None and targets.end() <= match.start() and _at_top(text[targets.end():match.start()]):
            line_end = text.find("\n", match.start())
            line = text[line_start:line_end if line_end >= 0 else len(text)].rstrip()
            if not line.endswith(",") and line.count(")") <= line.count("("):
                names = _TARGET.findall(targets.group(1))
        rename = _RENAME.match(text, match.end())
        if rename is not None:
            names.append(rename.group(1))
        for name in names:
            self.aliases.setdefault(name, api)
        return bool(names)


def _passed_on(text: str, start: int) -> bool:
    """Is the name at ``start`` (``nn.LayerNorm``) a call's first argument, as in
    ``partial(nn.LayerNorm, eps=1e-6)``, the one way ``FileFacts.api_call`` takes an API it is not
    calling?"""
    return _FIRST_ARGUMENT.search(text, max(0, start - 200), start) is not None


def _at_top(code: str) -> bool:
    """Does ``code`` close every bracket it opens: is what follows it an alternative of the value
    (``a or nn.LayerNorm``), not inside a call or a display (``dict(norm=nn.LayerNorm)``)?"""
    return all(code.count(left) == code.count(right) for left, right in ("()", "[]", "{}"))


def _trigger() -> Trigger:
    apis = [*STATIC_CALLS, *(f"torch.Tensor.{name}" for name in STATIC_METHODS)]
    calls = frozenset(api.rsplit(".", 1)[-1] for api in apis if not _decided_by_arguments(api))
    anywhere: dict[str, set[str]] = {}
    positions: dict[str, set[str]] = {}
    for api in apis:
        if _decided_by_arguments(api):
            name = api.rsplit(".", 1)[-1]
            patterns, at = _argument_patterns(api)
            anywhere.setdefault(name, set()).update(patterns)
            positions.setdefault(name, set()).update(at)
    values = frozenset(api.rsplit(".", 1)[-1] for api in STATIC_CALLS)
    return Trigger(calls, values, {name: re.compile("|".join([rf"{_ARGS}(?:{'|'.join(sorted(found))})",
                                                              *sorted(positions[name])]))
                                   for name, found in anywhere.items()})


TRIGGER = _trigger()


def _static_value(source: FileFacts, expr: Any) -> Any:
    """A literal's value; a ``torch.`` name as its qualified name (``torch.float16``); else UNKNOWN."""
    value = source.value(expr)
    if value is UNKNOWN:
        name = source.qualname(expr)
        return name if name and name.startswith("torch.") else UNKNOWN
    return value


def static_facts(source: FileFacts, api: str, args: Sequence[Any], partial: bool = False,
                 certain_api: bool = True) -> OperatorFacts:
    """Facts of a call in source: literal arguments, defaults for absent ones (unknown when
    ``*args``/``**kwargs`` or ``functools.partial`` may supply them)."""
    signature = SIGNATURES.get(api, Signature(()))
    bound, opaque = bind_arguments(args, signature.params)
    values = {name: _static_value(source, expr) for name, expr in bound.items()}
    for name, default in signature.defaults.items():
        values.setdefault(name, UNKNOWN if opaque or partial else default)
    return OperatorFacts(api, derive(api, values), certain_api)


def _method_api(source: FileFacts, receiver: Any, name: str) -> str | None:
    """``torch.Tensor.pow`` for ``x.pow(2)`` when ``pow`` is an unambiguous tensor method and ``x``
    is not a module the file imports (``np.flip`` is numpy's)."""
    if name not in STATIC_METHODS:
        return None
    qualname = source.qualname(receiver)
    if qualname is not None and qualname.split(".")[0] in {module.split(".")[0] for module in source.imports.values()}:
        return None
    return f"torch.Tensor.{name}"


def is_exported(functions: Sequence[str]) -> bool:
    """Is code inside these defs (outermost first) exported: inside a function other than
    ``__init__``? What runs at module or class level, or while a model is built, is not."""
    return bool(functions) and functions[-1] != "__init__"


def facts_from_call(source: FileFacts, call: Any, assigned: Mapping[str, Sequence[Any]],
                    exported: bool) -> OperatorFacts | None:
    """The facts of an operator call or layer, or None: a layer wherever it is built, a function or
    an unambiguous tensor method only in exported code. ``source`` is either tree's (libcst's
    ``SourceFile``, the ``ast`` path's ``AstSource``): both extractors call this on every call."""
    hit = source.api_call(call, STATIC_CALLS, assigned)
    if hit is not None:
        api, certain, args, partial = hit
        return static_facts(source, api, args, partial, certain) if _is_class(api) or exported else None
    method = source.method_call(call) if exported else None
    if method is None:
        return None
    receiver, name, args = method
    api = _method_api(source, receiver, name)
    return None if api is None else static_facts(source, api, args, certain_api=False)


def power_facts(source: FileFacts, left: Any, right: Any) -> OperatorFacts | None:
    """The facts of ``left ** right`` in exported code; None for plain arithmetic on numbers."""
    if isinstance(source.value(left), (int, float)):
        return None
    values = {"exponent": source.value(right)}
    return OperatorFacts("torch.Tensor.__pow__", derive("torch.Tensor.__pow__", values), certain_api=False)


class _Extractor(ScopedVisitor):
    """Operator calls, layers, tensor methods and ``**`` in a file, with their facts (see
    ``facts_from_call``; ``static.fast_rules.operators_extract`` is the ``ast`` path's walk)."""

    def __init__(self, source: SourceFile) -> None:
        super().__init__()
        self.source = source
        self.found: list[tuple[cst.CSTNode, OperatorFacts]] = []
        self.functions: list[str] = []

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        super().visit_FunctionDef(node)
        self.functions.append(node.name.value)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        super().leave_FunctionDef(original_node)
        self.functions.pop()

    def visit_Call(self, node: cst.Call) -> None:
        facts = facts_from_call(self.source, node, self.assigned, is_exported(self.functions))
        if facts is not None:
            self.found.append((node, facts))

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Power) and is_exported(self.functions):
            facts = power_facts(self.source, node.left, node.right)
            if facts is not None:
                self.found.append((node, facts))


def extract(source: SourceFile) -> Iterator[tuple[cst.CSTNode, OperatorFacts]]:
    """Every operator construct in the file the static pass can name, with its facts."""
    visitor = _Extractor(source)
    walk(source.module, visitor)
    return iter(visitor.found)


# ----- live modules and traced calls -------------------------------------------------------------

def live(value: Any) -> Any:
    """A live argument as the fact derivation reads it: a tensor as :class:`Tensor`, a dtype as
    its name (``torch.float16``), containers element by element."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "ndim"):
        dtype = str(value.dtype)
        return Tensor(tuple(int(d) for d in value.shape), _dtype_name(dtype), dtype == "torch.bool")
    if isinstance(value, tuple):
        return tuple(live(v) for v in value)
    if isinstance(value, list):
        return [live(v) for v in value]
    if type(value).__name__ == "dtype":
        return str(value)
    return value


def layer_facts(module: Any, api: str) -> OperatorFacts:
    """Facts of a built layer, from its attributes (``padding_mode``, ``dilation``)."""
    signature = SIGNATURES.get(api, Signature(()))
    values = {name: live(getattr(module, name)) for name in signature.params if hasattr(module, name)}
    for name, default in signature.defaults.items():
        values.setdefault(name, default)
    return OperatorFacts(api, derive(api, values))


def call_facts(api: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], tracing: bool) -> OperatorFacts:
    """Facts of one traced call, with the rank of its first tensor (``input_rank``)."""
    signature = SIGNATURES.get(api, Signature(()))
    rest = args[1:] if api.startswith("torch.Tensor.") else args
    values = {name: live(value) for name, value in bind_call(signature.params, rest, kwargs).items()}
    if api.startswith("torch.Tensor.") and args:
        values["input"] = live(args[0])
    for name, default in signature.defaults.items():
        values.setdefault(name, default)
    facts = derive(api, values, [live(v) for v in rest[len(signature.params):]])
    rank = next((len(v.shape) for v in map(live, args) if isinstance(v, Tensor)), None)
    return OperatorFacts(api, facts + ((("input_rank", rank),) if rank is not None else ()))


def describe(facts: OperatorFacts) -> str:
    return facts.what


def _failing_ops() -> re.Pattern[str]:
    """The operator names the failing cells of this family's probes were tied to (``Pow``,
    ``ReduceProd``, ``aten::einsum``): a runtime error naming one is about an MC5xx construct. Only
    probes no other family owns: ``GlobalAveragePool`` in an error is adaptive pooling's."""
    ops = {cell.failed_op for probe in PROBES.values() if not set(probe.apis) & OWNED for name, opset in optable.CELLS
           if (cell := TABLE.cell(probe.key, name, opset)) is not None and cell.failed_op
           and cell.verdict in FAILING}
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, ops), key=len, reverse=True)) + r")\b")


FAMILY = Family(
    name=NAME, rules=RULES, facts_type=OperatorFacts, trigger=TRIGGER, extract=extract, describe=describe,
    layer_apis=frozenset(api for api in APIS if _is_class(api)), layer_facts=layer_facts,
    call_apis=frozenset(api for api in APIS if not _is_class(api)), call_facts=call_facts,
    failing_ops=_failing_ops(), fallback=True,
)
