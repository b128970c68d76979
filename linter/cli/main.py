"""The ``modelcheck`` command line (Typer).

``modelcheck PATH... [--fix]`` checks model source; ``modelcheck audit TARGET`` audits a
third-party architecture. Errors the user can act on are one line on stderr and exit 2.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from modelcheck import __version__
from modelcheck.config import (
    Config,
    ConfigError,
    codes,
    find_pyproject,
    load_config,
    parse_inputs_ref,
    parse_shapes,
)
from modelcheck.findings import Report, Severity
from modelcheck.targets import PROFILES, TARGET_NAMES, TargetError, TargetSet, make_targets
from rich.console import Console

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelcheck.pipeline import Options

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class OutputFormat(str, Enum):
    rich = "rich"
    text = "text"
    json = "json"
    sarif = "sarif"
    github = "github"
    html = "html"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


#: one target name (``modelcheck audit --target``), from the target profiles
TargetName = Enum("TargetName", {name.replace("-", "_"): name for name in TARGET_NAMES}, type=str)  # type: ignore[misc]
_TARGET_HELP = ("Where the model goes; several with commas or the flag repeated (caffe2,executorch): "
                + ", ".join(f"{p.name} ({p.runtime_label})" for p in PROFILES.values()) + ". Default caffe2.")


class Exporter(str, Enum):
    torchscript = "torchscript"
    dynamo = "dynamo"


app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a one-line error on stderr; the caller raises the returned Exit."""
    typer.echo(f"modelcheck: error: {message}", err=True)
    return typer.Exit(code)


def _split_codes(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [code.strip().upper() for value in values for code in value.split(",") if code.strip()]


def _list_rules(console: Console) -> None:
    """A table on a terminal; in a pipe, ``code<TAB>name<TAB>summary`` lines that nothing cuts."""
    from modelcheck.report.rule_docs import PROFILES, rule_rows, tab_lines

    if not console.is_terminal:
        sys.stdout.write(tab_lines())
        return
    from rich.table import Table

    table = Table(title="modelcheck rules (severity per target; - = harmless there)")
    table.add_column("code")
    table.add_column("name")
    for label, _, _ in PROFILES:
        table.add_column(label)
    table.add_column("summary")
    for row in rule_rows():
        table.add_row(*row)
    console.print(table)


def _explain(code: str, console: Console) -> None:
    """The rule's documentation as markdown (what docs/rules.md and SARIF help show)."""
    from modelcheck.rules import RULES_BY_CODE

    rule = RULES_BY_CODE.get(code.upper())
    if rule is None:
        raise fail(f"unknown rule code {code!r} (see modelcheck --list-rules)")
    console.print(rule.markdown(), markup=False, highlight=False, soft_wrap=True)  # code blocks: never re-wrapped


# the long option declarations of `check`, one alias each, so its signature reads at a glance
_StaticOnlyOption = Annotated[
    bool, typer.Option("--static-only", help="Only read source: no torch, no user code run (the pre-commit path).")
]
_UnsafeFixesOption = Annotated[
    bool, typer.Option("--unsafe-fixes", help="Also apply fixes exact only for the configured input shape(s).")
]
_OpsetOption = Annotated[
    int | None, typer.Option(help="ONNX opset of the ONNX targets (default: 9 for caffe2, 17 for onnx).")
]
_OutputFormatOption = Annotated[
    OutputFormat | None, typer.Option("--format", help="rich (terminal), text, json, sarif, github or html.")
]
_FailOnOption = Annotated[
    FailOn | None, typer.Option("--fail-on", help="Lowest severity that makes the exit code 1.")
]
_ModelOption = Annotated[
    list[str] | None, typer.Option("--model", help="Model spec file.py:Name or package.module:Name (repeatable).")
]
_ModelArgsOption = Annotated[
    str | None,
    typer.Option(
        "--model-args", help="JSON keyword arguments for the model constructor, e.g. '{\"num_classes\": 1}'."
    ),
]
_InputShapeOption = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Input shape(s) for tracing and export, e.g. 1,3,224,224; several inputs: 1,3,224,224;1,1,224,224.",
    ),
]
_InputsOption = Annotated[
    str | None,
    typer.Option(
        "--inputs",
        help="module:make_inputs or file.py:make_inputs: returns the example inputs (a tensor, a tuple, "
        "or a dict of keyword inputs; called with the model if it takes an argument). Wins over --input-shape.",
    ),
]
_DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype", help="Input dtype for tracing and export: float32, float64, float16, bfloat16, int64 or int32."
    ),
]
_NoWeightFreeOption = Annotated[
    bool,
    typer.Option(
        "--no-weight-free",
        help="Load weights as the model code says; by default a missing weights file or a download is skipped "
        "(noted) and the model keeps its own initialisation.",
    ),
]
_ArtifactsOption = Annotated[
    Path | None,
    typer.Option(help="Where to write model.onnx, init_net.pb, predict_net.pb (default .modelcheck/<model>/)."),
]
_InstallOption = Annotated[
    str | None,
    typer.Option("--install", metavar="TARGET",
                 help="Install TARGET's runtime (caffe2: Debian bullseye's torch 1.7.1) and exit; idempotent."),
]
_InstallCaffe2Option = Annotated[
    bool, typer.Option("--install-caffe2", help="Same as --install caffe2.")
]
_DoctorOption = Annotated[
    bool, typer.Option("--doctor", help="Show each runtime, its version and whether it works, and exit.")
]
_ForceExcludeOption = Annotated[
    bool,
    typer.Option(
        "--force-exclude",
        help="Apply exclude patterns to paths named on the command line too (pre-commit names every staged file).",
    ),
]
_NoPathsOkOption = Annotated[
    bool,
    typer.Option(
        "--no-paths-ok", hidden=True, help="No path given is success, not a usage error (pre-commit hooks)."
    ),
]


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Model source files or folders.")] = None,
    static_only: _StaticOnlyOption = False,
    fix: Annotated[bool, typer.Option("--fix", help="Apply the fixes that provably keep weights and outputs.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Print what --fix would change; write nothing.")] = False,
    unsafe_fixes: _UnsafeFixesOption = False,
    target: Annotated[list[str] | None, typer.Option(help=_TARGET_HELP)] = None,
    opset: _OpsetOption = None,
    exporter: Annotated[Exporter | None, typer.Option(help="torch.onnx exporter for the onnx target.")] = None,
    output_format: _OutputFormatOption = None,
    fail_on: _FailOnOption = None,
    select: Annotated[list[str] | None, typer.Option(help="Codes or prefixes to check (e.g. MC2,MC301).")] = None,
    ignore: Annotated[list[str] | None, typer.Option(help="Codes or prefixes to skip.")] = None,
    model: _ModelOption = None,
    model_args: _ModelArgsOption = None,
    input_shape: _InputShapeOption = None,
    inputs: _InputsOption = None,
    dtype: _DtypeOption = "float32",
    timeout: Annotated[float | None, typer.Option(help="Seconds each child process (trace, smoke) may take.")] = None,
    no_smoke: Annotated[bool, typer.Option("--no-smoke", help="Skip the export-and-run smoke test.")] = False,
    no_weight_free: _NoWeightFreeOption = False,
    artifacts: _ArtifactsOption = None,
    atol: Annotated[float | None, typer.Option(help="Absolute floor of the runtime-vs-PyTorch tolerance.")] = None,
    rtol: Annotated[float | None, typer.Option(help="Tolerance relative to each output's max |value|.")] = None,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="List the rules and exit.")] = False,
    explain: Annotated[str | None, typer.Option("--explain", help="Explain one rule code and exit.")] = None,
    install: _InstallOption = None,
    install_caffe2: _InstallCaffe2Option = False,
    doctor: _DoctorOption = False,
    version: Annotated[bool, typer.Option("--version", help="Show the version and exit.")] = False,
    force_exclude: _ForceExcludeOption = False,
    no_paths_ok: _NoPathsOkOption = False,
) -> None:
    """Check PyTorch model source for what breaks on the way to a runtime (ONNX, Caffe2, ExecuTorch, LiteRT, ncnn)."""
    console = Console()
    _run_info_command(version=version, list_rules=list_rules, explain=explain,
                      install=_install_target(install, install_caffe2), doctor=doctor, console=console)
    paths = _check_usage(paths, model, no_paths_ok=no_paths_ok, fix=fix, diff=diff, unsafe_fixes=unsafe_fixes)
    config, the_target, kwargs = _configure(
        paths, model, model_args, dtype, static_only=static_only, force_exclude=force_exclude,
        flags={"target": target, "opset": opset, "exporter": exporter, "fail_on": fail_on, "select": select,
               "ignore": ignore, "input_shape": input_shape, "timeout": timeout, "atol": atol, "rtol": rtol,
               "inputs": inputs})

    from modelcheck.pipeline import Options

    options = Options(
        paths=paths, target=the_target, config=config, static_only=static_only, fix=fix, diff=diff,
        unsafe_fixes=unsafe_fixes, smoke=not no_smoke, model_specs=list(model or []), model_args=kwargs,
        artifacts=artifacts, dtype=dtype, weight_free=not no_weight_free,
    )
    _run_and_exit(options, output_format, console)


def _configure(paths: list[Path], model: list[str] | None, model_args: str | None, dtype: Any, *, static_only: bool,
               force_exclude: bool, flags: dict[str, Any]) -> tuple[Config, TargetSet, dict[str, Any]]:
    """pyproject plus flags, the target, and --model-args; a bad value of any is a usage error."""
    try:
        config = load_config(find_pyproject(paths))
        apply_flags(config, **flags)
        if force_exclude:
            config.force_exclude = True
        the_target = make_targets([config.target], config.opset, config.exporter)
        kwargs = parse_model_args(model_args)
        if not static_only:  # a bad --model or [tool.modelcheck.models] entry is a usage error
            from modelcheck.models.specs import specs_from_config

            specs_from_config(list(model or []), kwargs, config, dtype)
    except (ConfigError, TargetError, ValueError) as exc:
        raise fail(str(exc)) from None
    if not static_only:
        require_runtime()
    return config, the_target, kwargs


def _run_and_exit(options: Options, output_format: OutputFormat | None, console: Console) -> None:
    """Run the pipeline, render the report, and exit with the code the findings and stages call for."""
    from modelcheck.pipeline import exit_code, run
    from modelcheck.static.run import PathError

    try:
        report = _run_with_progress(options, run)
    except PathError as exc:
        raise fail(str(exc)) from None
    fmt = output_format or (OutputFormat.rich if sys.stdout.isatty() else OutputFormat.text)
    _render(report, fmt, console)
    threshold = None if options.config.fail_on == "never" else Severity(options.config.fail_on)
    raise typer.Exit(exit_code(report, threshold))


def _run_info_command(*, version: bool, list_rules: bool, explain: str | None, install: str | None, doctor: bool,
                      console: Console) -> None:
    """``--version``, ``--list-rules``, ``--explain``, ``--install TARGET``, ``--doctor``: each answers
    and exits without checking anything."""
    if version:
        typer.echo(f"modelcheck {__version__}")
        raise typer.Exit(EXIT_OK)
    if list_rules:
        _list_rules(console)
        raise typer.Exit(EXIT_OK)
    if explain:
        _explain(explain, console)
        raise typer.Exit(EXIT_OK)
    if install:
        raise typer.Exit(_install(install))
    if doctor:
        raise typer.Exit(_doctor(console))


def _check_usage(paths: list[Path] | None, model: list[str] | None, *, no_paths_ok: bool, fix: bool, diff: bool,
                 unsafe_fixes: bool) -> list[Path]:
    """Flag combinations that cannot mean anything are usage errors (exit 2) before anything runs."""
    if not paths and not model:
        if no_paths_ok:  # pre-commit ran the hook with no staged Python file: nothing to check
            raise typer.Exit(EXIT_OK)
        raise fail("no paths given (try: modelcheck src/model.py)")
    if fix and diff:
        raise fail("--fix and --diff exclude each other: --diff only shows what --fix would write")
    if unsafe_fixes and not (fix or diff):
        raise fail("--unsafe-fixes only adds to --fix or --diff (try: --fix --unsafe-fixes)")
    return paths or []


def apply_flags(
    config: Config, *, target: Any = None, opset: int | None = None, exporter: Exporter | None = None,
    fail_on: FailOn | None = None, select: list[str] | None = None, ignore: list[str] | None = None,
    input_shape: str | None = None, timeout: float | None = None, atol: float | None = None,
    rtol: float | None = None, inputs: str | None = None,
) -> None:
    """Command-line flags override pyproject values (shared by ``modelcheck`` and ``modelcheck audit``)."""
    _apply_target_flags(config, target, opset, exporter)
    _apply_rule_flags(config, fail_on, select, ignore)
    if input_shape is not None:
        config.set_input_shapes(parse_shapes(input_shape))
    if inputs is not None:
        config.inputs = parse_inputs_ref(inputs)
    _apply_limit_flags(config, timeout, atol, rtol)


def _apply_target_flags(config: Config, target: Any, opset: int | None, exporter: Exporter | None) -> None:
    """``--target``, ``--opset``, ``--exporter``: a new target without ``--opset`` drops pyproject's opset."""
    if target:  # one TargetName (audit) or the list --target gave (check)
        from modelcheck.targets import split_names

        config.target = ",".join(split_names([target.value] if isinstance(target, Enum) else target))
        if opset is None and config.opset is not None:
            config.opset = None  # a new target brings its own default opset
    if opset is not None:
        config.opset = opset
    if exporter is not None:
        config.exporter = exporter.value


def _apply_rule_flags(config: Config, fail_on: FailOn | None, select: list[str] | None,
                      ignore: list[str] | None) -> None:
    """``--fail-on``, ``--select``, ``--ignore``: which findings count; ``--ignore`` adds to pyproject's."""
    if fail_on is not None:
        config.fail_on = fail_on.value  # type: ignore[assignment]
    elif isinstance(config.fail_on, Severity):
        config.fail_on = config.fail_on.value  # type: ignore[assignment]
    if select := _split_codes(select):
        config.select = codes(select, "--select")
    if ignore := _split_codes(ignore):
        config.ignore = [*config.ignore, *codes(ignore, "--ignore")]


def _apply_limit_flags(config: Config, timeout: float | None, atol: float | None, rtol: float | None) -> None:
    """``--timeout``, ``--atol``, ``--rtol``: how long children may run and how close outputs must be."""
    if timeout is not None:
        if timeout <= 0:
            raise ValueError("--timeout must be positive")
        config.timeout = timeout
    if atol is not None:
        config.atol = atol
    if rtol is not None:
        config.rtol = rtol


def require_runtime() -> None:
    """Tracing, smoke tests, fix verification and audits need torch (the ``runtime`` extra)."""
    from importlib.util import find_spec

    missing = [name for name in ("torch", "onnx") if find_spec(name) is None]
    if missing:
        raise fail(
            f"{' and '.join(missing)} not installed: pip install 'modelcheck[runtime]' "
            "for tracing and the export smoke test, or pass --static-only"
        )


def _run_with_progress(options: Options, run: Callable[[Options], Report]) -> Report:
    """Run the pipeline; on a terminal, a status line says which model and stage run now."""
    status_console = Console(stderr=True)
    if options.static_only or not status_console.is_terminal:
        return run(options)
    with status_console.status("modelcheck: checking ...") as status:
        options.progress = status.update
        return run(options)


def parse_model_args(text: str | None) -> dict[str, Any]:
    """``--model-args``: a JSON object of constructor keyword arguments (shared with ``modelcheck audit``)."""
    if not text:
        return {}
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-args is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise ValueError("--model-args must be a JSON object of keyword arguments")
    return value


def _render(report: Report, fmt: OutputFormat, console: Console) -> None:
    from modelcheck.report import terminal as reporting

    if fmt is OutputFormat.json:
        sys.stdout.write(reporting.render_json(report) + "\n")
    elif fmt is OutputFormat.text:
        sys.stdout.write(reporting.render_text(report))
    elif fmt is OutputFormat.rich:
        reporting.render_rich(report, console)
    elif fmt is OutputFormat.sarif:
        from modelcheck.report.sarif import default_fix_provider, render_sarif

        sys.stdout.write(render_sarif(report, fix_provider=default_fix_provider(report.target, report.opset)) + "\n")
    elif fmt is OutputFormat.github:
        from modelcheck.report.sarif import render_github

        sys.stdout.write(render_github(report))
    elif fmt is OutputFormat.html:
        from modelcheck.report.html import render_report

        sys.stdout.write(render_report(report))
    else:
        raise fail(f"--format {fmt.value} is not available yet")


def _install_target(install: str | None, install_caffe2: bool) -> str | None:
    """``--install TARGET``, or ``caffe2`` for its older spelling ``--install-caffe2``."""
    if install_caffe2 and install not in (None, "caffe2"):
        raise fail(f"--install-caffe2 and --install {install} name two targets: install one at a time")
    return install or ("caffe2" if install_caffe2 else None)


def _install(name: str) -> int:
    """Install a target's runtime (idempotent: an installed one is only reported)."""
    from modelcheck.targets import InstallError, get_profile

    try:
        profile = get_profile(name)
    except TargetError as exc:
        raise fail(str(exc)) from None
    if profile.install is None:
        typer.echo(f"the {name} target has nothing to install: {profile.runtime_label} comes with "
                   f"{profile.install_hint}")
        return EXIT_OK
    try:
        status = profile.install(None, lambda line: typer.echo(line, err=True))
    except InstallError as exc:
        typer.echo(f"modelcheck: cannot install the {profile.runtime_label} runtime: {exc}", err=True)
        return EXIT_USAGE
    typer.echo(f"{profile.runtime_label} runtime ready: {status.version}")
    return EXIT_OK


def _doctor(console: Console) -> int:
    from modelcheck.doctor import run_doctor

    return run_doctor(console)


def main() -> None:
    """Console-script entry point: ``modelcheck audit TARGET`` goes to the audit app, all else to ``check``."""
    if len(sys.argv) > 1 and sys.argv[1] == "audit":  # a file named audit is checked as ./audit
        from modelcheck.cli.audit import main as audit_main

        audit_main(sys.argv[2:])
        return
    app()
