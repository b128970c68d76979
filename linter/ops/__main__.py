"""``python -m modelcheck.ops``: measure the operator compatibility table again (``make optable``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelcheck.ops.run import generate, readme_section, summary, update_readme
from modelcheck.ops.table import CELLS, TABLE_PATH
from modelcheck.targets import split_names


def main(argv: list[str] | None = None) -> int:
    """Regenerate the table (the shipped one unless ``--out``), print a summary, refresh the README."""
    parser = argparse.ArgumentParser(prog="python -m modelcheck.ops", description=__doc__)
    parser.add_argument("--out", type=Path, help=f"where to write the table (default: {TABLE_PATH})")
    parser.add_argument("--only", help="measure only the probes whose key contains this text (needs --out or "
                        "--merge)")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: the table keeps every other probe's cells, and new probes join it")
    parser.add_argument("--targets", help="measure only these targets' cells (comma-separated), keeping the "
                        "table's other cells as they are")
    parser.add_argument("--chunk", type=int, default=30, help="probes per child job (default 30)")
    parser.add_argument("--caffe2-timeout", type=float, default=60.0, help="seconds per Caffe2 run (default 60)")
    parser.add_argument("--extra-probes", type=Path,
                        help="a Python file whose probes() returns more probes to measure (needs --out)")
    args = parser.parse_args(argv)
    if ((args.only and not args.merge) or args.extra_probes) and args.out is None:
        parser.error("--only and --extra-probes change what is measured: give --out so the shipped table stays as "
                     "is, or --merge (--only) to measure those probes into it")
    targets = tuple(split_names([args.targets])) if args.targets else None
    unknown = sorted(set(targets or ()) - {t for t, _ in CELLS})
    if unknown:
        measured = ", ".join(dict.fromkeys(t for t, _ in CELLS))
        parser.error(f"the table has no cells for {', '.join(unknown)}; it measures {measured}")
    problem = _missing_runtime(targets)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    out = args.out or TABLE_PATH
    table = generate(out, only=args.only, merge=args.merge, targets=targets, chunk_probes=args.chunk,
                     caffe2_timeout=args.caffe2_timeout, extra_probes=args.extra_probes)
    print("\n".join(summary(table)))
    print(f"wrote {out}")
    if out == TABLE_PATH and update_readme(TABLE_PATH.with_name("README.md"), readme_section(table)):
        print(f"updated {TABLE_PATH.with_name('README.md')}")
    return 0


def _missing_runtime(targets: tuple[str, ...] | None) -> str:
    """Why the measured targets cannot run here (the real Caffe2 needs root; a target environment
    its install), or empty: a table is measured on the real runtimes or not at all."""
    from modelcheck.runtimes.caffe2.run import runtime_status
    from modelcheck.runtimes.envs import EnvMissing, job_python
    from modelcheck.targets import PROFILES

    wanted = targets or tuple(dict.fromkeys(t for t, _ in CELLS))
    if "caffe2" in wanted:
        status = runtime_status()
        if not status.installed or os.geteuid() != 0:
            return f"the table needs the real Caffe2 runtime (run as root): {status.reason or 'not root'}"
    for name in wanted:
        try:
            job_python(PROFILES[name])
        except EnvMissing as exc:
            return f"the table needs every target it measures: {exc}"
    return ""


if __name__ == "__main__":
    sys.exit(main())
