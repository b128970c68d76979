"""``modelcheck audit TARGET``: the command line of :mod:`modelcheck.audit.run` (a second Typer app).

``modelcheck.cli.main.main`` hands ``modelcheck audit ...`` here, so ``modelcheck PATH --fix`` stays
exactly as it is (a file literally named ``audit`` is checked as ``./audit``).
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from modelcheck.cli.main import EXIT_OK, Exporter, TargetName, apply_flags, fail, parse_model_args
from modelcheck.config import Config, ConfigError, find_pyproject, load_config
from modelcheck.targets import DEFAULT_OPSET, EXPORTERS, PROFILES, Target, TargetError, make_target
from rich.console import Console

if TYPE_CHECKING:  # pragma: no cover - typing only
    from modelcheck.audit.run import AuditOptions

EXIT_BREAKS = 1

audit_app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


class ExecutorName(str, Enum):
    local = "local"
    ray = "ray"


class AuditFormat(str, Enum):
    rich = "rich"
    text = "text"
    json = "json"
    sarif = "sarif"
    html = "html"


def default_memory_mb(jobs: int) -> int:
    """Three quarters of the machine's memory shared by the parallel jobs, at least 2 GiB each."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 8192
    return max(2048, int(total * 0.75) // max(1, jobs))


HELP = {
    "target_arg": "Installed packages or modules (pytorchcv.models.enet), or folders or files of model code.",
    "jobs": "Models audited at once (default: the number of cores; with --executor ray the cluster's CPUs decide).",
    "target": "Where the models go: " + ", ".join(f"{p.name} ({p.runtime_label})" for p in PROFILES.values())
              + f". Default {Config.target}.",
    "opset": "ONNX opset (default: " + ", ".join(f"{DEFAULT_OPSET[name]} for {name}" for name, p in PROFILES.items()
                                                 if p.onnx) + ").",
    "exporter": f"torch.onnx exporter ({' or '.join(EXPORTERS)}) for "
                + ", ".join(p.name for p in PROFILES.values() if len(p.exporters) > 1) + ".",
    "input_shape": "Input shape(s), e.g. 1,3,224,224; several inputs: 1,3,224,224;1,1,224,224.",
    "inputs": "module:make_inputs or file.py:make_inputs returning the example inputs; wins over --input-shape.",
    "timeout": "Seconds each stage (trace, smoke test) of one model may take.",
    "memory_mb": "Address-space cap of each model's processes, MiB (default: 3/4 of memory / jobs; with "
                 "--executor ray 8192, also each Ray task's memory request).",
    "match": "Only models whose name matches this pattern (resnet*).",
    "model": "Audit exactly these specs, file.py:Name or package.module:Name.",
    "model_args": "JSON keyword arguments for --model constructors.",
    "no_smoke": "Trace and lint only; no export or runtime.",
    "all_modules": "Audit the building blocks too (classes used inside another model), not only root architectures.",
    "output_format": "rich (terminal), text, json, sarif or html (one self-contained page).",
    "no_cache": "Audit every model again; do not read or write the cache.",
    "cache_dir": "Cache folder (default $MODELCHECK_HOME/cache/audit or .modelcheck/cache/audit).",
    "artifacts": "Where each model's exported and runtime files go.",
    "executor": "Where model jobs run: local (child processes here) or ray (one Ray task per model; "
                "pip install 'modelcheck[ray]').",
    "ray_address": "Ray cluster to join (default: RAY_ADDRESS; neither: a Ray runtime started for this audit).",
}


@audit_app.command(context_settings={"help_option_names": ["-h", "--help"]})
def audit(
    targets: Annotated[list[str], typer.Argument(metavar="TARGET", help=HELP["target_arg"])],
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help=HELP["jobs"])] = None,
    target: Annotated[TargetName | None, typer.Option(help=HELP["target"])] = None,
    opset: Annotated[int | None, typer.Option(help=HELP["opset"])] = None,
    exporter: Annotated[Exporter | None, typer.Option(help=HELP["exporter"])] = None,
    input_shape: Annotated[str | None, typer.Option("--input-shape", help=HELP["input_shape"])] = None,
    inputs: Annotated[str | None, typer.Option("--inputs", help=HELP["inputs"])] = None,
    timeout: Annotated[float | None, typer.Option(help=HELP["timeout"])] = None,
    memory_mb: Annotated[int | None, typer.Option("--memory-mb", help=HELP["memory_mb"])] = None,
    match: Annotated[str | None, typer.Option("--match", help=HELP["match"])] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help=HELP["model"])] = None,
    model_args: Annotated[str | None, typer.Option("--model-args", help=HELP["model_args"])] = None,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help=HELP["no_smoke"])] = False,
    all_modules: Annotated[bool, typer.Option("--all-modules", help=HELP["all_modules"])] = False,
    output_format: Annotated[AuditFormat | None, typer.Option("--format", help=HELP["output_format"])] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help=HELP["no_cache"])] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help=HELP["cache_dir"])] = None,
    artifacts: Annotated[Path, typer.Option(help=HELP["artifacts"])] = Path(".modelcheck/audit"),
    executor: Annotated[ExecutorName, typer.Option("--executor", help=HELP["executor"])] = ExecutorName.local,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help=HELP["ray_address"])] = None,
) -> None:
    """Audit every model of a third-party architecture: pickle, export and the target's runtime."""
    from modelcheck.audit.run import AuditOptions, default_cache_dir

    config, profile, kwargs = _configure(
        targets, model_args, jobs=jobs, executor=executor, ray_address=ray_address,
        flags={"target": target, "opset": opset, "exporter": exporter, "input_shape": input_shape,
               "timeout": timeout, "inputs": inputs})
    n_jobs = jobs or os.cpu_count() or 1
    options = AuditOptions(
        target=profile, config=config, jobs=n_jobs, memory_mb=_memory_cap(memory_mb, executor, n_jobs),
        smoke=not no_smoke, match=match, cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
        artifacts=artifacts, model_specs=list(model or []), model_args=kwargs, all_modules=all_modules,
        executor=executor.value, ray_address=ray_address,
    )
    _run_and_exit(targets, options, output_format)


def _configure(targets: list[str], model_args: str | None, *, jobs: int | None, executor: ExecutorName,
               ray_address: str | None, flags: dict[str, Any]) -> tuple[Config, Target, dict[str, Any]]:
    """pyproject (of the folders audited) plus flags, the target, and --model-args; a bad value of
    any is a usage error. The audit needs the runtime installed."""
    folders = [Path(t) for t in targets if Path(t).exists()]
    try:
        config = load_config(find_pyproject(folders) if folders else None)
        apply_flags(config, **flags)
        profile = make_target(config.target, config.opset, config.exporter)
        kwargs = parse_model_args(model_args)
        if jobs is not None and jobs < 1:
            raise ValueError("--jobs must be at least 1")
        if ray_address and executor is not ExecutorName.ray:
            raise ValueError("--ray-address needs --executor ray")
    except (ConfigError, TargetError, ValueError) as exc:
        raise fail(str(exc)) from None
    from modelcheck.cli.main import require_runtime

    require_runtime()
    return config, profile, kwargs


def _memory_cap(memory_mb: int | None, executor: ExecutorName, n_jobs: int) -> int:
    """--memory-mb, else this machine's share per job; with Ray a task's memory request is its cap,
    and this machine's size says nothing of the cluster's nodes."""
    if executor is not ExecutorName.ray:
        return memory_mb or default_memory_mb(n_jobs)
    from modelcheck.audit.ray import DEFAULT_MEMORY_MB, ray_available

    if not ray_available():
        raise fail("--executor ray needs Ray: pip install 'modelcheck[ray]'")
    return memory_mb or DEFAULT_MEMORY_MB


def _run_and_exit(targets: list[str], options: AuditOptions, output_format: AuditFormat | None) -> None:
    """Run the audit with live progress on stderr, render the report, exit 1 if a model would break."""
    from modelcheck.audit.run import AuditError, run_audit

    fmt = output_format or (AuditFormat.rich if sys.stdout.isatty() else AuditFormat.text)
    progress = _progress(Console(stderr=True))
    try:
        report = run_audit(targets, options, progress=progress)
    except AuditError as exc:
        raise fail(str(exc)) from None
    finally:
        progress.close()
    _render(report, fmt)
    raise typer.Exit(EXIT_BREAKS if any(row.bad for row in report.rows) else EXIT_OK)


def _progress(console: Console) -> Any:
    """Live progress on stderr: a rich bar with one line per finished model on a terminal; in a
    pipe (logs, CI) plain lines, ``auditing N model(s)`` then ``[i/N] model: status time``."""
    return _LiveProgress(console) if console.is_terminal else _PlainProgress(console)


def _model_line(row: Any, done: int, total: int) -> str:
    mark = "cached" if row.cached else (f"{row.seconds:.1f}s" if row.seconds is not None else "")
    return f"[{done}/{total}] {row.model}: {row.status} {mark}".rstrip()


class _PlainProgress:
    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: str, row: Any, done: int, total: int) -> None:
        if event == "listed":
            self.console.print(f"auditing {total} model(s)", style="bold", highlight=False)
        elif event == "done":
            self.console.print(_model_line(row, done, total), highlight=False, markup=False)

    def close(self) -> None:
        pass


class _LiveProgress:
    """A spinner while the models are listed, then a bar (done/total, elapsed) under the lines."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=True)
        self.task: Any = None
        self.started = False

    def __call__(self, event: str, row: Any, done: int, total: int) -> None:
        from rich.text import Text

        if not self.started:
            self.bar.start()
            self.started = True
        if event == "listing":
            self.task = self.bar.add_task("listing the models", total=None)
        elif event == "listed":
            if self.task is None:
                self.task = self.bar.add_task("auditing", total=total)
            self.bar.update(self.task, description=f"auditing {total} model(s)", total=total, completed=done)
        elif event == "done":
            style = "yellow" if row.status == "skipped" else "bold red" if row.bad else "green"
            self.bar.console.print(Text(_model_line(row, done, total), style=style))
            if self.task is not None:
                self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.started:
            self.bar.stop()


def _render(report: Any, fmt: AuditFormat) -> None:
    from modelcheck.audit import run as auditing

    if fmt is AuditFormat.json:
        import json

        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    elif fmt is AuditFormat.sarif:
        from modelcheck.report.sarif import render_sarif

        sys.stdout.write(render_sarif(auditing.to_report(report)) + "\n")
    elif fmt is AuditFormat.text:
        sys.stdout.write(auditing.render_text(report))
    elif fmt is AuditFormat.html:
        from modelcheck.report.html import render_audit

        sys.stdout.write(render_audit(report))
    else:
        auditing.render_rich(report, Console())


def main(argv: list[str]) -> None:
    """``modelcheck audit ARGS``: run the audit app on ARGS."""
    audit_app(args=argv, prog_name="modelcheck audit")



