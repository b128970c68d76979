"""The run, as plain functions over plain data: static → dynamic → fix → smoke → Report.

Each stage lives in its own module and is imported only when the run needs it, so the
``--static-only`` path never loads torch (the dynamic pass, fix verification and smoke test
run user code in child processes anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcheck.config import Config
from modelcheck.findings import Report, Severity
from modelcheck.static.run import check_paths
from modelcheck.targets import Target, TargetSet


@dataclass
class Options:
    """What one ``modelcheck`` invocation asked for, after config and flags are merged."""

    paths: list[Path]
    target: Target | TargetSet  # several with --target a,b: rules weigh every one, the smoke test runs each
    config: Config
    static_only: bool = False
    fix: bool = False
    diff: bool = False
    unsafe_fixes: bool = False
    smoke: bool = True
    model_specs: list[str] = field(default_factory=list)
    model_args: dict[str, Any] = field(default_factory=dict)
    artifacts: Path | None = None
    dtype: str = "float32"  # the traced/exported input's dtype (--dtype)
    weight_free: bool = True  # skip missing or downloaded weights while building (--no-weight-free)
    progress: Callable[[str], None] | None = None  # one line on what runs now (the CLI's status)


def run(options: Options) -> Report:
    """Run every stage the options ask for and return one Report."""
    static = check_paths(options.paths or _spec_files(options), options.target, options.config)
    report = Report(
        target=options.target.name,
        opset=options.target.opset,
        targets=[t.name for t in options.target.members],
        findings=static.findings,
        notes=static.notes,
        files_checked=static.files_checked,
    )
    if not static.files_checked and not static.notes:
        report.notes.append("nothing to check")

    # ----- dynamic pass: import, build, walk, pickle-probe and trace models in child processes -----
    sources = static.sources  # path → text of every file checked: what --fix may rewrite
    if not options.static_only:
        from modelcheck.trace.run import run_dynamic

        dynamic = run_dynamic(options, static)
        report.findings = dynamic.findings  # static and dynamic, merged (evidence static/dynamic/both)
        report.models.extend(dynamic.models)
        report.notes.extend(dynamic.notes)
        report.refuted = dynamic.refuted
        if dynamic.also.sources:  # project files the models are built from, checked (and fixed) too
            sources = {**static.sources, **dynamic.also.sources}
            report.files_checked += dynamic.also.files_checked
            report.also_checked = list(dynamic.also.sources)
            report.notes.append("also checked, as files the model is built from: " + ", ".join(report.also_checked))
    elif options.model_specs:
        report.notes.append("--static-only: the models named by --model were not built or traced")

    # ----- fixes (--fix / --diff): after the dynamic pass, before the smoke test -----
    smoked: list[str] = []  # models the fix step already smoke-tested on the fixed files
    if options.fix or options.diff:
        from modelcheck.fix.run import run_fix_step

        smoked = run_fix_step(options, report, sources, [] if options.static_only else dynamic.specs)

    # ----- smoke test: per model and target, export and the target's runtimes, in child processes -----
    if options.smoke and not options.static_only:
        from modelcheck.smoke.run import smoke_step

        smoke_step(options, report, [spec for spec in dynamic.specs if spec.text not in smoked])
    return report


def _spec_files(options: Options) -> list[Path]:
    """With only ``--model`` given, the static pass reads the files those specs name (file or package.module)."""
    from modelcheck.models.specs import spec_files

    return spec_files(options.model_specs)


def exit_code(report: Report, fail_on: Severity | None) -> int:
    """1 when a finding reaches ``fail_on`` or a smoke stage went wrong; else 0."""
    if any(stage.bad for stage in report.stages):
        return 1
    if any(model.status in ("failed", "crashed", "timeout") for model in report.models):
        return 1
    if fail_on is None:
        return 0
    return 1 if any(f.severity.rank >= fail_on.rank for f in report.findings) else 0
