"""Acceptance on third-party model code: timm 1.0.31's ``timm/models`` (119 files), read as text.

The wheel is fetched with ``pip download`` into ``benchmarks/.cache`` (shared with
``benchmarks/bench_static.py``); nothing of timm is imported or copied into the repository. What
must be found is worked out independently with the stdlib ``ast``: every ``ceil_mode=True``
pool call and every linear-mode upsample, at its line; nearest/scale-factor upsampling and
timm's transient lambdas must not be errors.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
from pathlib import Path

import pytest
from modelcheck.config import Config
from modelcheck.static.run import check_paths
from static_helpers import target_of

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_static.py"
LINEAR = {"linear", "bilinear", "bicubic", "trilinear"}
POOLS = {f"{kind}Pool{d}d" for kind in ("Max", "Avg") for d in (1, 2, 3)}


@pytest.fixture(scope="module")
def timm_models() -> Path:
    spec = importlib.util.spec_from_file_location("bench_static", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        return bench.timm_models()
    except subprocess.CalledProcessError as exc:  # no route to PyPI: say so rather than pass
        pytest.skip(f"cannot download timm {bench.TIMM}: {exc}")


@pytest.fixture(scope="module")
def report(timm_models):
    return check_paths([timm_models], target_of("caffe2"), Config())


def _calls(folder: Path):
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                keywords = {k.arg: k.value for k in node.keywords if k.arg}
                yield path, node, name, keywords


def _at(report, code: str) -> set[tuple[str, int]]:
    return {(Path(f.location.path).name, f.location.line) for f in report.findings if f.code == code}


def test_every_ceil_mode_true_pool_is_found_at_its_line(timm_models, report):
    expected = set()
    for path, node, _, keywords in _calls(timm_models):
        ceil = keywords.get("ceil_mode")
        if isinstance(ceil, ast.Constant) and ceil.value is True:
            expected.add((path.name, node.lineno))
    assert len(expected) >= 12
    assert expected <= _at(report, "MC301")


def test_every_linear_mode_upsample_is_found_at_its_line(timm_models, report):
    expected = set()
    for path, node, name, keywords in _calls(timm_models):
        mode = keywords.get("mode")
        if name in ("interpolate", "Upsample") and isinstance(mode, ast.Constant) and mode.value in LINEAR:
            expected.add((path.name, node.lineno))
    assert len(expected) >= 15
    assert expected <= _at(report, "MC201") | _at(report, "MC202") | _at(report, "MC206")  # MC206: bicubic
    bicubic = {(path.name, node.lineno) for path, node, name, keywords in _calls(timm_models)
               if name in ("interpolate", "Upsample") and isinstance(keywords.get("mode"), ast.Constant)
               and keywords["mode"].value == "bicubic"}
    assert bicubic and bicubic <= _at(report, "MC206") and not bicubic & _at(report, "MC201")


def test_nearest_and_scale_factor_upsampling_is_never_an_error(timm_models, report):
    nearest = set()
    for path, node, name, keywords in _calls(timm_models):
        mode = keywords.get("mode")
        if name in ("interpolate", "Upsample") and (
            mode is None or (isinstance(mode, ast.Constant) and mode.value == "nearest")
        ):
            nearest.add((path.name, node.lineno))
    assert nearest
    errors = {(Path(f.location.path).name, f.location.line) for f in report.findings if f.severity.value == "error"}
    assert not nearest & errors


def test_transient_lambdas_and_module_level_defs_are_not_errors(report):
    """timm's lambdas go to re.sub, filter, accumulate, dataclass default factories and a
    config dataclass; none is stored on a module, and its functions are module-level."""
    assert [f for f in report.findings if f.code.startswith("MC1")] == []


def test_nothing_crashes_and_every_file_is_checked(timm_models, report):
    assert report.files_checked == len(list(timm_models.rglob("*.py")))
    assert not [f for f in report.findings if f.code == "MC000"]


def test_pre_screen_changes_nothing_on_timm(timm_models):
    """Parsing only the statements a rule can care about finds exactly what a full libcst
    parse of every file finds, at the same places, at two targets (about a minute)."""
    from test_static import _full_parse_findings, _static_findings

    for path in sorted(timm_models.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for target in ("caffe2", "caffe2@11"):
            assert _static_findings(str(path), text, target) == _full_parse_findings(str(path), text, target), path
