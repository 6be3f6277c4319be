"""`make bench`: run every benchmark in turn and print its table.

Absolute numbers drift on shared machines, so each benchmark measures its own floor (a raw
insert, a raw select) in the same run and prints the ratio against it.

    python -m bench.run [NAME ...] [options passed on to each benchmark]
"""

from __future__ import annotations

import argparse
import sys

from bench import e2e, ingress, merge, scheduler

BENCHMARKS = {
    "merge": merge.main,
    "ingress": ingress.main,
    "scheduler": scheduler.main,
    "e2e": e2e.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0]
    )
    # No `choices=` here: argparse checks a nargs="*" default list against the choices as a
    # whole and rejects it, so the names are checked by hand below.
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(BENCHMARKS)}")
    # Names come first; everything from the first option on goes to the benchmarks. (Left
    # to parse_known_args, the value of `--records 20000` would be taken for a name.)
    argv = sys.argv[1:] if argv is None else argv
    split = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, rest = argv[:split], argv[split:]
    if not names and rest[:1] in (["-h"], ["--help"]):
        parser.parse_args(rest[:1])  # this runner's help; after a name it is the benchmark's
    args = parser.parse_args(names)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    for name in args.names or BENCHMARKS:
        print(f"== {name} ==", flush=True)
        status = BENCHMARKS[name](rest)
        if status:
            return int(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
