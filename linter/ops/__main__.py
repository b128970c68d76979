"""``python -m modelcheck.ops``: measure the operator compatibility table again (``make optable``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelcheck.ops.run import failures_markdown, generate, summary, update_readme
from modelcheck.ops.table import TABLE_PATH


def main(argv: list[str] | None = None) -> int:
    """Regenerate the table (the shipped one unless ``--out``), print a summary, refresh the README."""
    parser = argparse.ArgumentParser(prog="python -m modelcheck.ops", description=__doc__)
    parser.add_argument("--out", type=Path, help=f"where to write the table (default: {TABLE_PATH})")
    parser.add_argument("--only", help="measure only the probes whose key contains this text (needs --out)")
    parser.add_argument("--chunk", type=int, default=30, help="probes per child job (default 30)")
    parser.add_argument("--caffe2-timeout", type=float, default=60.0, help="seconds per Caffe2 run (default 60)")
    parser.add_argument("--extra-probes", type=Path,
                        help="a Python file whose probes() returns more probes to measure (needs --out)")
    args = parser.parse_args(argv)
    if (args.only or args.extra_probes) and args.out is None:
        parser.error("--only and --extra-probes change what is measured: give --out so the shipped table stays as is")
    from modelcheck.runtimes.caffe2.run import runtime_status

    status = runtime_status()
    if not status.installed or os.geteuid() != 0:
        print(f"the table needs the real Caffe2 runtime (run as root): {status.reason or 'not root'}",
              file=sys.stderr)
        return 2
    out = args.out or TABLE_PATH
    table = generate(out, only=args.only, chunk_probes=args.chunk, caffe2_timeout=args.caffe2_timeout,
                     extra_probes=args.extra_probes)
    print("\n".join(summary(table)))
    print(f"wrote {out}")
    if out == TABLE_PATH and update_readme(TABLE_PATH.with_name("README.md"), failures_markdown(table)):
        print(f"updated {TABLE_PATH.with_name('README.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
