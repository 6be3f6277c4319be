"""`make bench`: run every benchmark in turn and print its table.

Absolute numbers drift on shared machines, so each benchmark measures its own floor (a raw
insert, a raw select) in the same run and prints the ratio against it.
"""

from __future__ import annotations

import argparse
import sys

from bench import merge

BENCHMARKS = {"merge": merge.main}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], default=list(BENCHMARKS))
    args, rest = parser.parse_known_args(argv)
    for name in args.names or BENCHMARKS:
        print(f"== {name} ==", flush=True)
        status = BENCHMARKS[name](rest)
        if status:
            return int(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
