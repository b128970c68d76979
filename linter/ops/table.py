"""The operator compatibility table, parent side: load ``table.json`` and look cells up.

Every cell was measured (``python -m modelcheck.ops``), not predicted: the probe was exported with
the TorchScript exporter at that opset, checked, run on the target's real runtime (Caffe2 1.7.1
or ONNX Runtime) and compared with PyTorch eager. A rule asks
``lookup("torch.nn.functional.adaptive_avg_pool2d", "caffe2", 9, output_size=1)`` and gets what
happened to the probe variant that matches what it knows about the call site.

Cheap to import (the CLI and the static pass load it): no torch, no numpy, one JSON read on first use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

#: (target, opset) pairs measured; the caffe2 target's default is 9, the onnx and ort-mobile targets'
#: 17; a target that exports no ONNX (its own converter) has one cell, opset 0
CELLS: tuple[tuple[str, int], ...] = (("caffe2", 9), ("caffe2", 11), ("onnx", 9), ("onnx", 11), ("onnx", 17),
                                      ("ort-mobile", 17), ("executorch", 0), ("litert", 0), ("ncnn", 0),
                                      ("coreml", 0))
TABLE_PATH = Path(__file__).with_name("table.json")
FORMAT = 1

#: a cell's verdict, worst first: what it is called when several things went wrong
VERDICTS = ("probe_error", "job_crashed", "export_fails", "run_crashes", "run_fails", "mismatch", "checker_fails",
            "not_run", "ok")


def cell_name(target: str, opset: int) -> str:
    """``caffe2/9``, or ``executorch`` for a target with no opset: how cells are keyed in the JSON."""
    return f"{target}/{opset}" if opset else target


def verdict_of(cell: Mapping[str, Any]) -> str:
    """One word for a measured cell (see :data:`VERDICTS`)."""
    if cell.get("probe_error"):
        return "probe_error"
    if cell.get("job_crash"):
        return "job_crashed"
    if cell.get("exports") is False:
        return "export_fails"
    if cell.get("runs") is False:
        return "run_crashes" if cell.get("run_status") in ("crashed", "timeout") else "run_fails"
    if cell.get("runs") is None:
        return "not_run"
    if cell.get("matches") is False:
        return "mismatch"
    if cell.get("checks") is False:
        return "checker_fails"
    return "ok"


def error_of(cell: Mapping[str, Any]) -> str:
    """The one line that explains the verdict (empty when the cell is ok)."""
    for key in ("probe_error", "job_crash", "export_error", "run_error", "detail", "checker_error"):
        if cell.get(key):
            return str(cell[key])
    return ""


@dataclass(frozen=True)
class Cell:
    """What happened to one probe at one (target, opset). ``opset`` is the measured opset; when a
    lookup asked for an unmeasured one it is the nearest measured opset below (``exact`` False)."""

    probe: str
    target: str
    opset: int
    verdict: str
    exports: bool
    checks: bool | None
    runs: bool | None
    matches: bool | None
    error: str
    max_abs_diff: float | None
    rel_diff: float | None
    onnx_ops: tuple[str, ...]
    failed_op: str | None
    exact: bool = True

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @classmethod
    def from_json(cls, probe: str, target: str, opset: int, data: Mapping[str, Any], exact: bool = True) -> Cell:
        return cls(probe, target, opset, str(data.get("verdict") or verdict_of(data)), bool(data.get("exports")),
                   data.get("checks"), data.get("runs"), data.get("matches"), error_of(data),
                   data.get("max_abs_diff"), data.get("rel_diff"), tuple(data.get("onnx_ops") or ()),
                   data.get("failed_op"), exact)


#: What a probe stands for that its recorded facts do not say (yet): the kind of index a
#: ``Tensor[...]`` probe uses. Read as soft facts (:attr:`ProbeInfo.soft`); they belong in
#: ``probes.py`` as facts the next time the table is measured.
_INDEX_KINDS: dict[str, str] = {
    "Tensor[:, :2]": "slice", "Tensor[..., 1:-1]": "slice", "Tensor[:, :, ::2, ::2] [stride slicing]": "step",
    "Tensor[:, -1]": "int", "Tensor[:, [0, 2]]": "list", "Tensor[mask] [boolean mask]": "mask",
    "Tensor[mask] = 0 [index_put]": "mask", "Tensor[:, 1] = 1.0 [slice assignment]": "int",
}


@dataclass(frozen=True)
class ProbeInfo:
    """A probe as the table records it: key, torch APIs, facts (hard) and literal args (soft)."""

    key: str
    apis: tuple[str, ...]
    family: str
    facts: Mapping[str, Any]
    args: Mapping[str, Any]
    inputs: tuple[tuple[int, ...], ...]
    aten_ops: tuple[str, ...]
    #: facts that follow from the probe's inputs and arguments (:func:`soft_facts`): a match on
    #: one counts like a fact, a difference does not exclude (``input_rank``: a 3-d ``x ** 2``
    #: still matches the 4-d probe)
    soft: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeInfo:
        args, inputs = dict(data.get("args", {})), tuple(tuple(s) for s in data.get("inputs", ()))
        soft = {**soft_facts(args), **({"input_rank": len(inputs[0])} if inputs else {})}
        if data["key"] in _INDEX_KINDS:
            soft["index"] = _INDEX_KINDS[data["key"]]
        return cls(data["key"], tuple(data.get("apis", ())), data.get("family", ""), dict(data.get("facts", {})),
                   args, inputs, tuple(data.get("aten_ops", ())), soft)


# ------------------------------------------------------------------------------- matching facts

_MISSING = object()  # a fact one probe records and another does not
_LINEAR_MODES = frozenset({"linear", "bilinear", "bicubic", "trilinear"})


def derive_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """Add the facts probes are keyed on that follow from what a rule knows.

    ``output_size`` → ``global`` (every size 1); with ``input_size`` also ``divides`` (each input
    size a multiple of the output size; ``None`` keeps a dimension); an interpolation ``mode`` with
    ``align_corners`` unset (None) means ``align_corners=False``, torch's default.
    """
    out = dict(facts)
    size = facts.get("output_size")
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size,)
    if size is not None and "global" not in out and all(isinstance(s, int) or s is None for s in sizes):
        out["global"] = all(s == 1 for s in sizes)
    given = facts.get("input_size")
    if size is not None and given is not None and "divides" not in out:
        inputs = tuple(given) if isinstance(given, (list, tuple)) else (given,) * len(sizes)
        if len(inputs) == len(sizes) and all(isinstance(i, int) for i in inputs):
            out["divides"] = all(s is None or (isinstance(s, int) and s > 0 and i % s == 0)
                                 for i, s in zip(inputs, sizes, strict=True))
    if out.get("mode") in _LINEAR_MODES and out.get("align_corners") is None:
        out["align_corners"] = False
    for key, value in soft_facts(facts).items():
        out.setdefault(key, value)
    return out


def soft_facts(args: Mapping[str, Any]) -> dict[str, Any]:
    """Facts that follow from literal arguments and only break ties: of a ``pad``, how many
    dimensions it pads (``pad_dims``) and that it crops (``pad_negative``, only said when true:
    not cropping is what every other padding probe does, and no reason to prefer one)."""
    pad = args.get("pad")
    if isinstance(pad, (list, tuple)) and pad and all(isinstance(p, int) for p in pad):
        return {"pad_dims": (len(pad) + 1) // 2, **({"pad_negative": True} if any(p < 0 for p in pad) else {})}
    return {}


def _plain(value: Any) -> Any:
    """Tuples as lists, as they come back from JSON."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """A fact's value as JSON gives it back (tuples as lists)."""
    return _plain(value)


def same(a: Any, b: Any) -> bool:
    """Equal as facts: tuples and lists alike, as they come back from JSON."""
    return _plain(a) == _plain(b)


def match_score(probe: ProbeInfo, facts: Mapping[str, Any]) -> int | None:
    """How well a probe fits a call's facts: None when a hard fact differs; +2 per agreeing fact
    or soft fact (:attr:`ProbeInfo.soft`), +1 per agreeing literal argument (a differing argument
    does not exclude: ``output_size=7`` still matches the ``global=False, divides=True`` probe
    measured with ``output_size=2``)."""
    score = 0
    for key, value in facts.items():
        if key in probe.facts:
            if _plain(probe.facts[key]) != _plain(value):
                return None
            score += 2
        elif key in probe.soft:
            score += 2 if _plain(probe.soft[key]) == _plain(value) else 0
        elif key in probe.args and _plain(probe.args[key]) == _plain(value):
            score += 1
    return score


# ------------------------------------------------------------------------------------- the table


class OpTable:
    """A loaded table: probes in catalogue order, their cells, and what it was measured with."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise ValueError(f"operator table format {data.get('format')!r}, this modelcheck reads {FORMAT}")
        self.data = data
        self.versions: dict[str, str] = dict(data.get("versions", {}))
        self.generated: str = str(data.get("generated", ""))
        self.probes: dict[str, ProbeInfo] = {}
        self._cells: dict[str, dict[str, Any]] = {}
        self._by_api: dict[str, list[ProbeInfo]] = {}
        self._deciding: dict[str, frozenset[str]] = {}
        for entry in data.get("probes", []):
            info = ProbeInfo.from_json(entry)
            self.probes[info.key] = info
            self._cells[info.key] = dict(entry.get("cells", {}))
            for api in info.apis:
                self._by_api.setdefault(api, []).append(info)

    def probes_for(self, api: str) -> list[ProbeInfo]:
        """Every probe exercising a torch API (``torch.nn.functional.adaptive_avg_pool2d``)."""
        return list(self._by_api.get(api, ()))

    def candidates(self, api: str, facts: Mapping[str, Any] | None = None) -> list[tuple[int, ProbeInfo]]:
        """Every probe of ``api`` the facts do not rule out, with its :func:`match_score`, best
        first (catalogue order among equals, so the plainest variant leads)."""
        wanted = derive_facts(facts or {})
        scored = [(score, probe) for probe in self._by_api.get(api, ())
                  if (score := match_score(probe, wanted)) is not None]
        return sorted(scored, key=lambda pair: -pair[0])

    def find_probe(self, api: str, facts: Mapping[str, Any] | None = None) -> ProbeInfo | None:
        """The probe variant of ``api`` that best matches the facts a rule knows about the call;
        with no facts, the API's first (plainest) probe. None when no probe fits."""
        found = self.candidates(api, facts)
        return found[0][1] if found else None

    def deciding_keys(self, api: str) -> frozenset[str]:
        """The facts that change what happens to ``api`` somewhere: the keys on which two of its
        probes differ, and differ in nothing else, while their cells do not all agree. A rule
        needs only these to find the variant (``groups`` does not decide a convolution's fate,
        ``padding='same'`` does); a value never probed for another key would match nothing."""
        found = self._deciding.get(api)
        if found is None:
            probes = self._by_api.get(api, ())
            rows = {probe.key: self.row(probe.key) for probe in probes}
            keys: set[str] = set()
            for i, one in enumerate(probes):
                for other in probes[i + 1:]:
                    if rows[one.key] != rows[other.key]:
                        differ = {key for key in {*one.facts, *other.facts}
                                  if _plain(one.facts.get(key, _MISSING)) != _plain(other.facts.get(key, _MISSING))}
                        keys |= differ if len(differ) == 1 else set()
            found = self._deciding[api] = frozenset(keys)
        return found

    def row(self, key: str) -> tuple[str, ...]:
        """A probe's verdict in every cell of :data:`CELLS` (``"-"`` where not measured)."""
        cells = self._cells.get(key, {})
        return tuple(str(cells[name].get("verdict") or verdict_of(cells[name])) if name in cells else "-"
                     for name in (cell_name(t, o) for t, o in CELLS))

    def cell(self, key: str, target: str, opset: int) -> Cell | None:
        """A probe's cell; an unmeasured opset falls back to the nearest measured one below it."""
        cells = self._cells.get(key)
        if cells is None:
            return None
        measured = sorted((o for t, o in CELLS if t == target and cell_name(t, o) in cells and o <= opset),
                          reverse=True)
        if not measured:
            return None
        return Cell.from_json(key, target, measured[0], cells[cell_name(target, measured[0])],
                              exact=measured[0] == opset)

    def lookup(self, api_or_key: str, target: str, opset: int, facts: Mapping[str, Any] | None = None) -> Cell | None:
        """The cell of a probe key, or of the probe matching a torch API name and the call's facts."""
        if api_or_key in self.probes:
            return self.cell(api_or_key, target, opset)
        probe = self.find_probe(api_or_key, facts)
        return self.cell(probe.key, target, opset) if probe else None

    def failures(self, target: str, opset: int) -> list[Cell]:
        """Every cell at (target, opset) that is not ok, in catalogue order."""
        cells = (self.cell(key, target, opset) for key in self.probes)
        return [c for c in cells if c is not None and c.exact and not c.ok]


def load(path: Path | None = None) -> OpTable:
    """The table at ``path``, or the one shipped with modelcheck (read once)."""
    return _load(str(path or TABLE_PATH))


@cache
def _load(path: str) -> OpTable:
    return OpTable(json.loads(Path(path).read_text(encoding="utf-8")))


def lookup(api_or_key: str, target: str, opset: int, **facts: Any) -> Cell | None:
    """:meth:`OpTable.lookup` on the shipped table, e.g.
    ``lookup("torch.nn.AdaptiveAvgPool2d", "caffe2", 9, output_size=1)``."""
    return load().lookup(api_or_key, target, opset, facts)


def find_probe(api: str, **facts: Any) -> str | None:
    """The key of the shipped table's probe matching a torch API and a call's facts."""
    probe = load().find_probe(api, facts)
    return probe.key if probe else None
