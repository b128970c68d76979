"""The operator compatibility table (``modelcheck.ops``): the loader and lookups, and evidence that the
shipped ``table.json`` still says what the real exporter, ONNX Runtime, Caffe2, ORT mobile and the
converters and runtimes of ExecuTorch, LiteRT, ncnn and Core ML do.

The fast tests read the shipped table. The slow ones re-measure a sample of cells through the same
``optable`` child jobs that generated it and fail when a fresh verdict differs from the shipped one:
the table cannot drift from the truth unnoticed (regenerate it with ``make optable``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_caffe2, require_target
from modelcheck.ops.run import Measured, measure, readme_section, summary
from modelcheck.ops.table import (
    CELLS,
    TABLE_PATH,
    VERDICTS,
    cell_name,
    derive_facts,
    find_probe,
    load,
    lookup,
    verdict_of,
)
from modelcheck.targets import PROFILES

CONV = "nn.Conv2d(kernel_size=3, padding=1)"
GAP = "F.adaptive_avg_pool2d(output_size=1)"
AAP5 = "F.adaptive_avg_pool2d(output_size=5) on 33×33"
BILINEAR = "F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)"
STACK_LAST = "torch.stack(dim=-1) [negative dim]"  # measured apart from the rest of the table: re-measured always
NAMED = (CONV, GAP, AAP5, BILINEAR, STACK_LAST)
#: the targets measured through their own converter, in their own environment
CONVERTED = tuple(t for t, _ in CELLS if not PROFILES[t].onnx)


def _raw() -> dict[str, Any]:
    return json.loads(TABLE_PATH.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------- the shipped table


def test_the_table_says_what_it_was_measured_on_and_has_every_cell() -> None:
    table = load()
    raw = _raw()
    assert {"torch", "onnx", "onnxruntime", "caffe2", *CONVERTED} <= set(table.versions)
    assert table.versions["caffe2"].startswith("caffe2 (torch 1.7"), "measured without the real Caffe2 runtime"
    assert all("torch 2." in table.versions[t] for t in CONVERTED), "a target measured outside its environment"
    assert table.generated.endswith("Z") and raw["cells"] == [cell_name(t, o) for t, o in CELLS]
    exported = [c for p in raw["probes"] for n, c in p["cells"].items() if n.startswith("caffe2/") and c["exports"]]
    runs = sum(cost["caffe2_runs"] for cost in [raw["cost"], *raw.get("earlier_costs", [])])
    assert len(table.probes) >= 250 and runs == len(exported)  # every one ran on Caffe2
    for entry in raw["probes"]:
        assert set(entry["cells"]) == set(raw["cells"]), entry["key"]
        assert entry["apis"] and all(a.startswith(("torch.", "torchvision.")) for a in entry["apis"]), entry["key"]
        for name, cell in entry["cells"].items():
            _a_measured_cell(entry, name, cell)


def _a_measured_cell(entry: dict[str, Any], name: str, cell: dict[str, Any]) -> None:
    """A cell of the shipped table is a measurement: a verdict that follows from what it records, never
    ``not_run`` where the target has a runtime here (but for a batch ncnn has no axis for), and (ONNX)
    the op types a failure can be tied to."""
    target = name.split("/")[0]
    assert cell["verdict"] == verdict_of(cell) and cell["verdict"] in VERDICTS, (entry["key"], name)
    if PROFILES[target].env is None:  # torchvision is not in the target environments: its probes cannot build there
        assert cell["verdict"] != "probe_error", (entry["key"], name, cell)
    if cell["verdict"] == "not_run":  # converted where nothing runs, or a batch a batchless runtime cannot take
        converted_only = PROFILES[target].run_file is None and not PROFILES[target].onnx
        batch = PROFILES[target].batchless and cell["run_error"].startswith("not measured:")
        assert converted_only or batch, (entry["key"], name, cell)
    if cell.get("exports") and PROFILES[target].onnx:
        assert cell["onnx_ops"], (entry["key"], name)  # what a failing cell can be tied to


def test_lookup_by_key_returns_the_measured_cell() -> None:
    cell = lookup(GAP, "caffe2", 9)
    assert cell is not None and cell.exact and cell.probe == GAP
    assert cell.verdict == "run_fails" and not cell.ok and cell.exports and cell.runs is False
    assert "kernel_[dim]" in cell.error and cell.failed_op == "GlobalAveragePool"
    assert cell.onnx_ops == ("GlobalAveragePool",)
    assert lookup(GAP, "onnx", 9).ok  # type: ignore[union-attr]
    conv = lookup(CONV, "onnx", 17)
    assert conv is not None and conv.ok and conv.matches and conv.max_abs_diff is not None


def test_lookup_by_api_and_facts_finds_the_matching_variant() -> None:
    api = "torch.nn.functional.adaptive_avg_pool2d"
    assert find_probe(api, output_size=1) == GAP
    assert find_probe("torch.nn.AdaptiveAvgPool2d", output_size=(1, 1)) == GAP
    assert find_probe(api, output_size=5, input_size=33) == AAP5
    assert find_probe(api, output_size=7, input_size=(14, 14)) == "F.adaptive_avg_pool2d(output_size=7) on 14×14"
    assert find_probe(api, output_size=3, input_size=12) == "F.adaptive_avg_pool2d(output_size=2) on 12×12"
    cell = lookup(api, "caffe2", 9, output_size=5, input_size=33)
    assert cell is not None and cell.probe == AAP5 and cell.verdict == "export_fails"
    assert find_probe("torch.nn.functional.interpolate", mode="bilinear", scale_factor=2) == BILINEAR
    assert find_probe("torch.nn.Upsample", mode="bilinear", align_corners=True, scale_factor=2) == (
        "F.interpolate(scale_factor=2, mode='bilinear', align_corners=True)")
    assert find_probe("torch.nn.functional.no_such_op") is None
    assert lookup("torch.nn.functional.no_such_op", "caffe2", 9) is None


def test_an_unmeasured_opset_falls_back_to_the_nearest_below() -> None:
    cell = lookup(CONV, "onnx", 13)
    assert cell is not None and cell.opset == 11 and not cell.exact
    assert lookup(CONV, "onnx", 8) is None and lookup(CONV, "tensorrt", 17) is None
    assert all(c.exact for c in load().failures("caffe2", 9))


def test_derived_facts() -> None:
    assert derive_facts({"output_size": 1}) == {"output_size": 1, "global": True}
    assert derive_facts({"output_size": (2, 3), "input_size": 12}) == {
        "output_size": (2, 3), "input_size": 12, "global": False, "divides": True}
    assert derive_facts({"output_size": (1, None), "input_size": (5, 7)})["divides"] is True
    assert derive_facts({"output_size": 5, "input_size": 33})["divides"] is False
    assert derive_facts({"mode": "bilinear"})["align_corners"] is False
    assert "align_corners" not in derive_facts({"mode": "nearest"})


def test_the_loader_imports_no_torch() -> None:
    code = ("import sys, modelcheck.ops.table as t; t.load(); "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_readme_summary_is_the_one_generated_from_the_shipped_table() -> None:
    raw = _raw()
    readme = TABLE_PATH.with_name("README.md").read_text(encoding="utf-8")
    assert readme_section(raw) in readme, "run `make optable` (it rewrites the README's generated section)"
    lines = summary(raw)
    assert lines[0].startswith(f"{len(raw['probes'])} probes, {len(raw['probes']) * len(CELLS)} cells")


# ------------------------------------------------------------------------- evidence: re-measured

def _sample() -> list[str]:
    """The named cases, plus every 20th probe of the table: a sample that moves with the catalogue."""
    keys = list(load().probes)
    return list(dict.fromkeys([*NAMED, *keys[::20]]))


def _fresh(targets: tuple[str, ...]) -> Measured:
    work = [(key, t, o) for key in _sample() for t, o in CELLS if t in targets]
    return measure(work, progress=lambda _line: None)


def _agrees(measured: Measured, targets: tuple[str, ...]) -> None:
    """Every re-measured cell has the shipped verdict, export result and ONNX op types."""
    table = load()
    differences = []
    for (key, target, opset), record in measured.cells.items():
        assert target in targets
        shipped = table.cell(key, target, opset)
        assert shipped is not None and shipped.exact
        fresh = (verdict_of(record), bool(record.get("exports")), tuple(record.get("onnx_ops") or ()))
        if fresh != (shipped.verdict, shipped.exports, shipped.onnx_ops):
            differences.append(f"{key} at {target}/{opset}: measured {fresh}, table says "
                               f"{(shipped.verdict, shipped.exports, shipped.onnx_ops)}")
    assert not differences, "the table drifted (run `make optable`):\n" + "\n".join(differences)


@pytest.fixture(scope="module")
def fresh_onnx() -> Measured:
    return _fresh(("onnx",))


@pytest.fixture(scope="module")
def fresh_caffe2() -> Measured:
    require_caffe2()
    return _fresh(("caffe2",))


@pytest.mark.slow
def test_onnx_runtime_cells_re_measured_agree_with_the_table(fresh_onnx: Measured) -> None:
    cells = fresh_onnx.cells
    assert all(verdict_of(cells[(CONV, "onnx", o)]) == "ok" for o in (9, 11, 17))
    assert all(verdict_of(cells[(GAP, "onnx", o)]) == "ok" for o in (9, 11, 17))
    assert all(cells[(AAP5, "onnx", o)]["exports"] is False for o in (9, 11, 17))
    assert "not factor of input size" in cells[(AAP5, "onnx", 9)]["export_error"]
    bilinear = cells[(BILINEAR, "onnx", 9)]
    assert verdict_of(bilinear) == "mismatch" and bilinear["onnx_ops"] == ["Constant", "Upsample"]
    assert bilinear["rel_diff"] > 0.1  # not rounding: a different interpolation
    assert verdict_of(cells[(BILINEAR, "onnx", 11)]) == "ok"
    _agrees(fresh_onnx, ("onnx",))


@pytest.mark.slow
@pytest.mark.caffe2
def test_caffe2_cells_re_measured_agree_with_the_table(fresh_caffe2: Measured) -> None:
    cells = fresh_caffe2.cells
    gap = cells[(GAP, "caffe2", 9)]
    assert verdict_of(gap) == "run_fails" and gap["run_stage"] == "run"
    assert "kernel_[dim]" in gap["run_error"] and gap["failed_op"] == "GlobalAveragePool"
    assert all(verdict_of(cells[(CONV, "caffe2", o)]) == "ok" for o in (9, 11))
    assert all(cells[(AAP5, "caffe2", o)]["exports"] is False for o in (9, 11))
    assert verdict_of(cells[(BILINEAR, "caffe2", 9)]) == "mismatch"
    _agrees(fresh_caffe2, ("caffe2",))


@pytest.mark.slow
@pytest.mark.parametrize("target", ("ort-mobile", *CONVERTED))
def test_mobile_target_cells_re_measured_agree_with_the_table(target: str) -> None:
    """Each mobile target's sample re-measured through its own converter and runtime, in its own
    environment: the same verdicts as shipped; the plain convolution converts (and runs) everywhere."""
    if PROFILES[target].env is not None:
        require_target(target)
    fresh = _fresh((target,))
    conv = fresh.cells[(CONV, target, CELLS[[t for t, _ in CELLS].index(target)][1])]
    assert verdict_of(conv) == ("ok" if PROFILES[target].run_file or PROFILES[target].onnx else "not_run"), conv
    _agrees(fresh, (target,))


@pytest.mark.slow
def test_a_probe_that_crashes_its_job_is_recorded_and_the_rest_measured(tmp_path: Path) -> None:
    extra = tmp_path / "crashing_probes.py"
    extra.write_text(
        "import os\n"
        "import torch\n"
        "from modelcheck.ops.probes import Fn, Probe\n\n\n"
        "def _abort_when_traced(x):\n"
        "    if torch.jit.is_tracing():\n"
        "        os.abort()\n"
        "    return x + 1\n\n\n"
        "def probes():\n"
        "    return [Probe('test: aborts when traced', ('test.abort',), lambda: Fn(_abort_when_traced), 'test')]\n"
    )
    work = [("test: aborts when traced", "onnx", 9), ("test: aborts when traced", "onnx", 17), ("nn.ReLU()", "onnx", 9)]
    measured = measure(work, extra_probes=extra, progress=lambda _line: None)
    assert measured.jobs == 2
    for opset in (9, 17):
        crashed = measured.cells[("test: aborts when traced", "onnx", opset)]
        assert verdict_of(crashed) == "job_crashed" and "SIGABRT" in crashed["job_crash"]
        assert "during trace" in crashed["job_crash"]
    assert verdict_of(measured.cells[("nn.ReLU()", "onnx", 9)]) == "ok"


@pytest.mark.slow
def test_merge_measures_some_probes_into_a_table_and_keeps_every_other_cell(tmp_path: Path) -> None:
    """``--only TEXT --merge``: those probes' cells are measured again (here at onnx only) and every
    other cell and probe of the table stays as it was, in catalogue order."""
    out = tmp_path / "table.json"
    raw = _raw()
    key = "Tensor.clamp_max(0.5)"
    changed = json.loads(json.dumps(raw))
    probe = next(p for p in changed["probes"] if p["key"] == key)
    probe["cells"]["onnx/17"] = {**probe["cells"]["onnx/17"], "max_abs_diff": 123.0}  # a stale cell to redo
    changed["probes"] = [p for p in changed["probes"] if p["key"] != "Tensor.clamp_min(0.0)"]  # a new probe
    out.write_text(json.dumps(changed), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "modelcheck.ops", "--only", "Tensor.clamp_m", "--merge",
                           "--targets", "onnx", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    merged = json.loads(out.read_text(encoding="utf-8"))
    assert [p["key"] for p in merged["probes"]] == [p["key"] for p in raw["probes"]]
    by_key = {p["key"]: p for p in merged["probes"]}
    assert by_key[key]["cells"]["onnx/17"]["max_abs_diff"] < 1e-5  # measured again
    assert set(by_key["Tensor.clamp_min(0.0)"]["cells"]) == {"onnx/9", "onnx/11", "onnx/17"}  # new: what was measured
    for earlier in raw["probes"]:
        if not earlier["key"].startswith("Tensor.clamp_m"):
            assert by_key[earlier["key"]]["cells"] == earlier["cells"], earlier["key"]
