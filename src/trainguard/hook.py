"""The pre-commit hook: scan every staged dataset file, fail the commit on findings.

pre-commit passes many file names to one call, while `trainguard scan` takes
one dataset; this loops over them with the library, prints one line per file
and exits with the worst code (2 unreadable, 1 findings or a detector that did
not run, 0 clean), so a commit never lands with an unchecked file.
"""

from __future__ import annotations

import argparse
import sys

from trainguard.errors import TrainguardError
from trainguard.scan import exit_code, scan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trainguard-hook", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="dataset files (pre-commit passes the staged ones)")
    parser.add_argument("--fail-on", default="high", help="severity that fails the commit (default: high)")
    parser.add_argument("--kind", default="auto", help="dataset kind when it cannot be detected")
    args = parser.parse_args(argv)
    worst = 0
    for path in args.files:
        try:
            report = scan(path, kind=args.kind)
        except TrainguardError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            worst = max(worst, 2)
            continue
        code = exit_code(report, args.fail_on)
        counts = ", ".join(f"{n} {s}" for s, n in report.severity_counts().items() if n) or "no findings"
        failed = [d.name for d in report.failed]
        note = f"; detectors that failed: {', '.join(failed)}" if failed else ""
        print(f"{path}: {'FAIL' if code else 'ok'} ({counts}{note})", file=sys.stderr)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
