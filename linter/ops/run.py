"""Measuring the operator table, parent side: ``python -m modelcheck.ops`` (``make optable``).

The measurements run in ``optable`` child jobs (:mod:`modelcheck.ops.job`), a few dozen probes
each: an exporter or ONNX Runtime that crashes on a probe kills only its job. The job names the
cell it was working on in ``current.json``; that cell is recorded as crashed and a new job carries
on with the cells not done yet. Caffe2 runs are separate chroot processes already
(:func:`modelcheck.runtimes.caffe2.run.run_onnx`). No torch import here.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck.jobs.run import ChildOutcome, run_job
from modelcheck.ops.table import CELLS, FORMAT, VERDICTS, cell_name, verdict_of

JOB_KIND = "optable"
#: measurement fields that vary from run to run: summed into ``cost``, kept out of the cells
_TIMINGS = ("export_seconds", "run_seconds")

Work = tuple[str, str, int]  # (probe key, target, opset)


@dataclass
class Measured:
    """What the jobs sent back: per-probe facts, per-cell records, and what it took."""

    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: dict[Work, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 0
    crashes: list[str] = field(default_factory=list)
    #: what the targets measured in environments of their own ran on (``env_versions``)
    versions: dict[str, str] = field(default_factory=dict)


def _read_folder(folder: Path, measured: Measured) -> None:
    done = folder / "done.jsonl"
    if not done.exists():
        return
    for line in done.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if record.get("type") == "probe":
            measured.probes[record["key"]] = record
        elif record.get("type") == "cell":
            measured.cells[(record["key"], record["target"], int(record["opset"]))] = record


def _blame(folder: Path, outcome: ChildOutcome, chunk: list[Work], measured: Measured) -> list[Work]:
    """After a job crashed or hung: record the cell it was on (all the probe's cells, if it was
    computing the eager reference) as ``job_crash``; returns the cells blamed."""
    try:
        current = json.loads((folder / "current.json").read_text())
    except (OSError, ValueError):
        raise RuntimeError(f"the optable job failed before measuring anything: {outcome.describe()}\n"
                           f"{outcome.traceback_tail}") from None
    key, stage = current["key"], current["stage"]
    if stage in ("reference", "trace"):  # before any cell: the probe itself is what crashes
        blamed = [w for w in chunk if w[0] == key and w not in measured.cells]
    else:
        blamed = [(key, current["target"], int(current["opset"]))]
    for work in blamed:
        measured.cells[work] = {"key": work[0], "target": work[1], "opset": work[2],
                                "job_crash": f"the measuring process {outcome.describe()} during {stage}"}
    measured.crashes.append(f"{key} at {stage}: {outcome.describe()}")
    return blamed


def measure(work: list[Work], *, chunk_probes: int = 30, caffe2_home: Path | None = None,
            caffe2_timeout: float = 60.0, extra_probes: Path | None = None,
            progress: Callable[[str], None] = print) -> Measured:
    """Measure every cell of ``work`` in child jobs of ``chunk_probes`` probes each; a target with an
    environment of its own (ExecuTorch, LiteRT, ncnn, Core ML) in jobs started in that environment."""
    measured = Measured()
    for python, cells in _by_environment(work).items():
        remaining = cells
        total = len(remaining)
        where = f" in {python.parent.parent.name}'s environment" if python else ""
        while remaining:
            keys = list(dict.fromkeys(w[0] for w in remaining))[:chunk_probes]
            chunk = [w for w in remaining if w[0] in keys]
            seconds = _measure_chunk(chunk, python, measured, caffe2_home=caffe2_home, caffe2_timeout=caffe2_timeout,
                                     extra_probes=extra_probes)
            remaining = [w for w in remaining if w not in measured.cells]
            progress(f"  {total - len(remaining)}/{total} cells measured{where} ({seconds:.0f} s for that job)")
    return measured


def _by_environment(work: list[Work]) -> dict[Path | None, list[Work]]:
    """The cells grouped by the interpreter that measures them: this one (None), or a target's own;
    a target whose environment is not installed stops the run with the install command."""
    from modelcheck.runtimes.envs import job_python
    from modelcheck.targets import PROFILES

    groups: dict[Path | None, list[Work]] = {}
    pythons = {target: job_python(PROFILES[target]) for target in dict.fromkeys(w[1] for w in work)}
    for cell in work:
        groups.setdefault(pythons[cell[1]], []).append(cell)
    return groups


def _measure_chunk(chunk: list[Work], python: Path | None, measured: Measured, *, caffe2_home: Path | None,
                   caffe2_timeout: float, extra_probes: Path | None) -> float:
    """One ``optable`` job over ``chunk``; a crash or hang blames the cell it was on. Its seconds."""
    with tempfile.TemporaryDirectory(prefix="modelcheck-optable-") as tmp:
        payload = {"action": "measure", "work": [list(w) for w in chunk], "folder": tmp,
                   "caffe2_timeout": caffe2_timeout, "caffe2_home": str(caffe2_home) if caffe2_home else None,
                   "extra_probes": str(extra_probes) if extra_probes else None, "probe_records": python is None}
        # a converter takes seconds per probe and its environment's imports up to half a minute
        per_cell = 10.0 if python is None else 40.0
        outcome = run_job(JOB_KIND, payload, timeout=120.0 + per_cell * len(chunk), python=python)
        measured.jobs += 1
        _read_folder(Path(tmp), measured)
        if outcome.status == "error":  # our bug, not the probe's: stop with the traceback
            raise RuntimeError(f"the optable job failed: {outcome.error}\n{outcome.traceback_tail}")
        if outcome.ok:
            measured.versions.update((outcome.value or {}).get("versions", {}))
        else:
            _blame(Path(tmp), outcome, chunk, measured)
    return outcome.seconds


def list_probes(extra_probes: Path | None = None, timeout: float = 300.0) -> dict[str, Any]:
    """The catalogue (keys, APIs, facts), the versions and the exporter's symbolic registry, from a child."""
    payload = {"action": "list", "extra_probes": str(extra_probes) if extra_probes else None}
    outcome = run_job(JOB_KIND, payload, timeout=timeout)
    if not outcome.ok:
        raise RuntimeError(f"cannot list the probes: {outcome.describe()}\n{outcome.traceback_tail}")
    return dict(outcome.value)


# ------------------------------------------------------------------------------------ the table


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """A cell as stored: no bookkeeping or timings, diffs to 4 significant digits, its verdict."""
    cell = {k: v for k, v in record.items() if k not in ("type", "key", "target", "opset", *_TIMINGS)}
    for name in ("max_abs_diff", "rel_diff"):
        if isinstance(cell.get(name), float):
            cell[name] = float(f"{cell[name]:.4g}")
    cell["verdict"] = verdict_of(cell)
    return cell


def _cost(measured: Measured, seconds: float) -> dict[str, Any]:
    """What generating the table took (per-cell timings vary with load, so only their sums are kept)."""
    caffe2 = [c["run_seconds"] for (_, t, _), c in measured.cells.items() if t == "caffe2" and "run_seconds" in c]
    exports = [c["export_seconds"] for c in measured.cells.values() if "export_seconds" in c]
    return {"seconds": round(seconds, 1), "jobs": measured.jobs, "caffe2_runs": len(caffe2),
            "caffe2_seconds_mean": round(sum(caffe2) / len(caffe2), 3) if caffe2 else None,
            "caffe2_seconds_total": round(sum(caffe2), 1), "export_seconds_total": round(sum(exports), 1),
            "job_crashes": measured.crashes}


def assemble(listing: dict[str, Any], measured: Measured, seconds: float,
             cells: tuple[tuple[str, int], ...] = CELLS) -> dict[str, Any]:
    """The table's JSON: versions, timestamp, cost, every probe with its cells, and coverage of the
    exporter's symbolic registry (registered ops no probe's traced graph reaches)."""
    from modelcheck.ops.job import ATOL, ATOL16, RTOL, RTOL16  # the job module imports torch only in functions

    probes = []
    for meta in listing["probes"]:
        extra = measured.probes.get(meta["key"], {})
        entry = {**meta, "aten_ops": extra.get("aten_ops", []), "outputs": extra.get("outputs", []), "cells": {}}
        for target, opset in cells:
            record = measured.cells.get((meta["key"], target, opset))
            if record is not None:
                entry["cells"][cell_name(target, opset)] = _clean(record)
        probes.append(entry)
    reached = {op for p in probes for op in p["aten_ops"]}
    return {
        "format": FORMAT,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {**listing["versions"], **measured.versions},
        "cells": [cell_name(t, o) for t, o in cells],
        "tolerance": {"atol": ATOL, "rtol": RTOL, "float16": {"atol": ATOL16, "rtol": RTOL16},
                      "rule": "max|got - expected| <= atol + rtol * max|expected|"},
        "cost": _cost(measured, seconds),
        "probes": probes,
        "symbolics": listing["symbolics"],
        "unprobed_symbolics": sorted(op for op in listing["symbolics"] if op not in reached),
    }


def summary(table: dict[str, Any]) -> list[str]:
    """Lines for the terminal: counts, then each (target, opset)'s verdicts."""
    cost = table["cost"]
    n_cells = sum(len(p["cells"]) for p in table["probes"])
    mean = cost["caffe2_seconds_mean"]
    lines = [f"{len(table['probes'])} probes, {n_cells} cells in {cost['seconds']:.0f} s "
             f"({cost['jobs']} jobs; {cost['caffe2_runs']} Caffe2 runs"
             f"{f', {mean:.2f} s each' if mean else ''}; {len(cost['job_crashes'])} job crashes)"]
    for name in table["cells"]:
        counts = Counter(p["cells"][name]["verdict"] for p in table["probes"] if name in p["cells"])
        if not counts:  # a run over some targets only
            continue
        parts = [f"{counts[v]} {v}" for v in reversed(VERDICTS) if counts[v]]
        lines.append(f"  {name:10} " + ", ".join(parts))
    return lines


README_BEGIN = "<!-- generated by python -m modelcheck.ops: failures at each target's default cell -->"
README_END = "<!-- end of generated section -->"
#: the cells the README lists failures for: each mobile target at its default opset
#: verdicts that are no failure of the target, and how the README counts them
_NOT_FAILURES = {"ok": "ok", "not_run": "not run",
                 "probe_error": "not buildable there (torchvision is not in its environment)"}
README_CELLS = (("caffe2", 9), ("ort-mobile", 17), ("executorch", 0), ("litert", 0), ("ncnn", 0), ("coreml", 0))


def readme_section(table: dict[str, Any]) -> str:
    """The README's generated section: for each target at its default cell, every probe not ok there."""
    parts = []
    for target, opset in README_CELLS:
        name = cell_name(target, opset)
        if any(name in p["cells"] for p in table["probes"]):
            parts.append(f"### {target}" + (f" opset {opset}" if opset else "") + "\n\n"
                         + failures_markdown(table, target, opset))
    return "\n\n".join(parts)


def failures_markdown(table: dict[str, Any], target: str = "caffe2", opset: int = 9) -> str:
    """Every probe not ok at (target, opset), in catalogue order (grouped by family)."""
    name = cell_name(target, opset)
    verdicts = Counter(p["cells"][name]["verdict"] for p in table["probes"] if name in p["cells"])
    rows = [(p["family"], p["key"], p["cells"][name]) for p in table["probes"]
            if name in p["cells"] and p["cells"][name]["verdict"] not in _NOT_FAILURES]
    total = sum(verdicts.values())
    versions = table["versions"]
    where = f"{target} opset {opset}" if opset else target
    ran_on = (f"torch {versions.get('torch')}, {versions.get('caffe2')}, onnxruntime {versions.get('onnxruntime')}"
              if target in ("caffe2", "onnx") else versions.get(target) or
              f"torch {versions.get('torch')}, onnxruntime {versions.get('onnxruntime')}")
    op = "ONNX op" if opset else "op"
    aside = "".join(f"; {verdicts[v]} {_not_failure(v, target)}" for v in _NOT_FAILURES if v != "ok" and verdicts[v])
    lines = [f"{len(rows)} of {total} probes are not ok at {where}{aside} (measured with {ran_on}; table written "
             f"{table['generated']}):", "", f"| family | probe | verdict | {op} | error |",
             "| --- | --- | --- | --- | --- |"]
    for family, key, cell in rows:
        error = _error_line(cell).replace("|", "\\|")
        error = error if len(error) <= 140 else error[:137] + "…"
        op = cell.get("failed_op") or ""
        lines.append(f"| {family} | `{key}` | {cell['verdict']} | {op} | {error} |")
    return "\n".join(lines)


def _not_failure(verdict: str, target: str) -> str:
    """How the README counts cells that are no failure of the target."""
    from modelcheck.targets import PROFILES

    if verdict == "not_run":
        profile = PROFILES[target]
        return "converted, not run (no runtime here)" if profile.run_file is None else "not measured (batch > 1)"
    return _NOT_FAILURES[verdict]


def _error_line(cell: dict[str, Any]) -> str:
    from modelcheck.ops.table import error_of

    return " ".join(error_of(cell).split())


def update_readme(readme: Path, text: str) -> bool:
    """Replace the generated section of the README (between the markers); False when it has none."""
    if not readme.exists():
        return False
    content = readme.read_text(encoding="utf-8")
    start, end = content.find(README_BEGIN), content.find(README_END)
    if start < 0 or end < start:
        return False
    readme.write_text(content[: start + len(README_BEGIN)] + "\n\n" + text + "\n\n" + content[end:], encoding="utf-8")
    return True


def dumps(table: dict[str, Any]) -> str:
    """The table as JSON with one line per probe field and per cell: readable, and a re-measured
    cell shows up in ``git diff`` as the one line it is."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    parts = []
    for name, value in table.items():
        if name != "probes":
            parts.append(f" {one(name)}: {one(value)}")
            continue
        probes = []
        for probe in value:
            fields = [f"  {one(k)}: {one(v)}" for k, v in probe.items() if k != "cells"]
            cells = ",\n".join(f"   {one(c)}: {one(v)}" for c, v in probe["cells"].items())
            probes.append(" {\n" + ",\n".join([*fields, '  "cells": {\n' + cells + "\n  }"]) + "\n }")
        parts.append(' "probes": [\n' + ",\n".join(probes) + "\n ]")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def generate(out: Path, *, only: str | None = None, merge: bool = False, targets: tuple[str, ...] | None = None,
             chunk_probes: int = 30, caffe2_timeout: float = 60.0, extra_probes: Path | None = None,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every probe (or those whose key contains ``only``) at every cell (or only the cells of
    ``targets``) and write the table to ``out``. With ``targets`` or ``merge`` the table already at
    ``out`` keeps every cell not measured again (``merge``: new probes join it in catalogue order)."""
    started = time.monotonic()
    progress("listing the probes and the exporter's symbolic registry …")
    listing = list_probes(extra_probes)
    chosen = [p for p in listing["probes"] if not only or only in p["key"]]
    if not merge:
        listing["probes"] = chosen
    cells = tuple(c for c in CELLS if targets is None or c[0] in targets)
    work = [(p["key"], target, opset) for p in chosen for target, opset in cells]
    progress(f"measuring {len(chosen)} probes × {len(cells)} (target, opset) = {len(work)} cells …")
    measured = measure(work, chunk_probes=chunk_probes, caffe2_timeout=caffe2_timeout, extra_probes=extra_probes,
                       progress=progress)
    keep = targets is not None or merge
    earlier = _keep_earlier(out, measured, cells, {p["key"] for p in chosen}) if keep else None
    table = assemble(listing, measured, time.monotonic() - started)
    if earlier is not None:
        table["versions"] = {**earlier.get("versions", {}), **table["versions"]}
        table["earlier_costs"] = [*earlier.get("earlier_costs", []), earlier["cost"]] if "cost" in earlier else []
    table["cost"]["targets"] = sorted({t for t, _ in cells})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(dumps(table), encoding="utf-8")
    tmp.replace(out)
    return table


def _keep_earlier(out: Path, measured: Measured, cells: tuple[tuple[str, int], ...],
                  redone_probes: set[str]) -> dict[str, Any] | None:
    """The table at ``out`` (None if there is none): every cell of it not measured again (a probe of
    ``redone_probes`` at one of ``cells``) and its probes' traced ops go into ``measured``, so a run
    over some targets or some probes leaves the rest as it was measured."""
    if not out.exists():
        return None
    earlier = json.loads(out.read_text(encoding="utf-8"))
    redone = {cell_name(t, o) for t, o in cells}
    for probe in earlier.get("probes", []):
        if probe["key"] not in measured.probes:
            measured.probes[probe["key"]] = {"aten_ops": probe.get("aten_ops", []), "outputs": probe.get("outputs", [])}
        for target, opset in CELLS:
            name = cell_name(target, opset)
            if name in probe.get("cells", {}) and not (probe["key"] in redone_probes and name in redone):
                measured.cells.setdefault((probe["key"], target, opset), dict(probe["cells"][name]))
    return earlier
