"""Speed of the static pass (``modelcheck --static-only``) on third-party model code.

One command, all in the same run on the same files (timm 1.0.31's ``timm/models``, 119 files,
about 102,000 lines):

    .venv/bin/python benchmarks/bench_static.py [--skip-torchfix] [--runs N]

(a) ``modelcheck --static-only --format json timm/models``, a fresh process, as pre-commit runs it
    (a folder this size is spread over the free cores in forked workers, as TorchFix uses one job
    per core);
(b) TorchFix 0.7.0 (also libcst based) on the same folder, from its own venv: it pins
    ``libcst<1.6`` and this project uses a newer one;
(c) a bare ``libcst.parse_module`` of every file, and (d) a bare stdlib ``ast.parse``;
then how many files the pre-screen lets through (to ``ast``, and to libcst), and a cold ``modelcheck
--static-only`` on one ~700-line model file with its import time (``python -X importtime``).

Goals (issue 2): at least 30x faster than TorchFix, under a third of the bare libcst
parse, and under 0.5 s cold per file. Wall times on a shared 2-core machine move with its load,
so CPU seconds are printed too. Exit status 1 if a goal is missed. Downloads (the timm wheel,
TorchFix into its venv) go to ``benchmarks/.cache`` (git-ignored) and are reused.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
TIMM = "1.0.31"
TORCHFIX = "0.7.0"
BIN = Path(sys.executable).parent  # the project's venv: modelcheck is installed there


def timm_models() -> Path:
    """timm's ``timm/models`` folder from the released wheel (downloaded once, never imported)."""
    target = CACHE / f"timm-{TIMM}"
    models = target / "timm" / "models"
    if models.is_dir():
        return models
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = next(wheels.glob(f"timm-{TIMM}-*.whl"), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                        f"timm=={TIMM}", "-d", str(wheels)], check=True)
        wheel = next(wheels.glob(f"timm-{TIMM}-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target, [n for n in archive.namelist() if n.startswith("timm/models/")])
    return models


def torchfix_bin() -> Path:
    """``torchfix`` from its own venv (TorchFix pins libcst<1.6), installed once."""
    env = CACHE / f"torchfix-{TORCHFIX}-venv"
    script = env / "bin" / "torchfix"
    if not script.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
        subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        f"torchfix=={TORCHFIX}"], check=True)
    return script


def timed(argv: list[str], ok: tuple[int, ...] = (0, 1)) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run of ``argv``."""
    before = os.times()
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = os.times()
    if done.returncode not in ok:
        sys.exit(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def bare_parse(parser: str, files: list[Path]) -> tuple[float, float]:
    """Seconds to parse every file with ``parser`` (reading them excluded), in a fresh process."""
    code = (
        "import sys, time\n"
        f"import {'libcst' if parser == 'libcst' else 'ast'} as p\n"
        "texts = [open(f, encoding='utf-8').read() for f in sys.argv[1:]]\n"
        "wall, cpu = time.perf_counter(), time.process_time()\n"
        f"for t in texts: p.{'parse_module' if parser == 'libcst' else 'parse'}(t)\n"
        "print(time.perf_counter() - wall, time.process_time() - cpu)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True, check=True)
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def prescreen(files: list[Path]) -> tuple[int, int, int, int, int]:
    """(files parsed, lines parsed, lines in all files, files libcst parses, lines it parses) after
    the pre-screen: the families with an ``ast`` port read an ``ast`` tree of the kept code, and
    libcst parses what the other families keep (a file the ast path declines aside)."""
    from modelcheck.rules import FAMILIES
    from modelcheck.static.fast_rules import EXTRACTORS
    from modelcheck.static.run import reduce_source

    parsed = parsed_lines = total = by_cst = cst_lines = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        total += text.count("\n")
        families, code, _ = reduce_source(text, FAMILIES)
        if families:
            parsed += 1
            parsed_lines += code.count("\n")
        rest = [family for family in families if family.name not in EXTRACTORS]
        if rest:
            by_cst += 1
            cst_lines += (code if len(rest) == len(families) else reduce_source(text, rest)[1]).count("\n")
    return parsed, parsed_lines, total, by_cst, cst_lines


def import_time(path: Path) -> tuple[float, list[tuple[str, float]]]:
    """Seconds a cold ``modelcheck --static-only PATH`` spends importing, and the largest
    top-level imports (``python -X importtime``; the module's own imports come lazily)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "modelcheck", "--static-only", "--format", "json",
                           str(path)], capture_output=True, text=True)
    top = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and not match.group(2).startswith(" "):
            top.append((match.group(2), int(match.group(1)) / 1e6))
    return sum(s for _, s in top), sorted(top, key=lambda item: -item[1])[:5]


def model_file(folder: Path, lines: int = 700) -> Path:
    """The model file whose length is nearest ``lines``."""
    return min(sorted(folder.rglob("*.py")), key=lambda p: abs(p.read_text(encoding="utf-8").count("\n") - lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-torchfix", action="store_true", help="skip TorchFix (about 150 s here)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each modelcheck measurement (min is kept)")
    args = parser.parse_args()

    folder = timm_models()
    files = sorted(folder.rglob("*.py"))
    modelcheck = str(BIN / "modelcheck")
    print(f"timm {TIMM} timm/models: {len(files)} files, "
          f"{sum(p.read_text(encoding='utf-8').count(chr(10)) for p in files):,} lines; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")

    runs = [timed([modelcheck, "--static-only", "--format", "json", str(folder)]) for _ in range(args.runs)]
    mc_wall, mc_cpu = min(runs)
    print(f"(a) modelcheck --static-only      {mc_wall:7.2f} s wall  {mc_cpu:7.2f} s CPU   (best of {args.runs})")
    tf_wall = tf_cpu = None
    if not args.skip_torchfix:
        tf_wall, tf_cpu = timed([str(torchfix_bin()), str(folder)])
        print(f"(b) TorchFix {TORCHFIX}                {tf_wall:7.2f} s wall  {tf_cpu:7.2f} s CPU   "
              f"(its default: one job per core)")
    cst_wall, cst_cpu = bare_parse("libcst", files)
    print(f"(c) libcst.parse_module, all      {cst_wall:7.2f} s wall  {cst_cpu:7.2f} s CPU")
    ast_wall, ast_cpu = bare_parse("ast", files)
    print(f"(d) ast.parse, all                {ast_wall:7.2f} s wall  {ast_cpu:7.2f} s CPU")

    parsed, parsed_lines, total, by_cst, cst_lines = prescreen(files)
    print(f"pre-screen: {parsed}/{len(files)} files parsed, {parsed_lines:,}/{total:,} lines "
          f"({100 * parsed_lines / total:.1f}%), libcst parses {by_cst} files, {cst_lines:,} lines "
          f"({100 * cst_lines / total:.1f}%); every file gets the stdlib compiler's syntax check")

    one = model_file(folder)
    cold_runs = [timed([modelcheck, "--static-only", "--format", "json", str(one)]) for _ in range(max(args.runs, 5))]
    cold = [wall for wall, _ in cold_runs]
    seconds, top = import_time(one)
    baseline = min(timed([sys.executable, "-c", "pass"], ok=(0,))[0] for _ in range(3))
    print(f"cold, one file ({one.name}, {one.read_text(encoding='utf-8').count(chr(10))} lines): "
          f"min {min(cold):.3f} s wall ({min(cpu for _, cpu in cold_runs):.3f} s CPU), "
          f"median {statistics.median(cold):.3f} s (bare python start-up {baseline:.3f} s)")
    print(f"  of which imports {seconds:.3f} s; largest: " + ", ".join(f"{name} {s:.3f}" for name, s in top))

    goals = [("under a third of the bare libcst parse", mc_wall < cst_wall / 3, f"{cst_wall / mc_wall:.1f}x faster"),
             ("cold single file under 0.5 s", min(cold) < 0.5, f"{min(cold):.3f} s")]
    if tf_wall is not None:
        goals.insert(0, ("at least 30x faster than TorchFix", tf_wall / mc_wall >= 30, f"{tf_wall / mc_wall:.1f}x"))
    print("ratios: " + "; ".join(
        part for part in (
            f"TorchFix/modelcheck {tf_wall / mc_wall:.1f}x wall, {tf_cpu / mc_cpu:.1f}x CPU" if tf_wall else "",
            f"libcst parse/modelcheck {cst_wall / mc_wall:.1f}x wall, {cst_cpu / mc_cpu:.1f}x CPU",
            f"modelcheck/ast parse {mc_wall / ast_wall:.2f}x wall",
        ) if part))
    for name, met, value in goals:
        print(f"  goal {'met   ' if met else 'MISSED'} {name}: {value}")
    return 0 if all(met for _, met, _ in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
