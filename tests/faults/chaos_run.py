"""``scripts/chaos``: run ``tests.faults.chaos.Chaos`` for ``--minutes`` and print the fault counts and the
checked history."""

from __future__ import annotations

import argparse
import sys
import time

from tests.faults.chaos import Chaos
from tests.services import short_tmpdir


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=time.time_ns() % 100_000)
    args = parser.parse_args(argv)
    root = short_tmpdir("chaos-")
    print(f"chaos: seed {args.seed}, {args.minutes:g} min, logs under {root}", flush=True)
    chaos = Chaos(root, args.seed)
    try:
        chaos.run(args.minutes * 60, log=lambda line: print(line, flush=True))
        report = chaos.check()
    finally:
        chaos.close()
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
