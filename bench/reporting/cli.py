"""The command line: one sub-command per suite."""

from __future__ import annotations

import argparse
import sys

from . import __doc__ as USAGE
from . import compression, cuda, experiments, kernels, mpi, scaling, zmq
from .common import ReportError

# name -> module with DESCRIPTION and report(args) -> exit status; in --help's order
SUITES = {"kernels": kernels, "scaling": scaling, "zmq": zmq, "mpi": mpi, "cuda": cuda,
          "compression": compression, "experiments": experiments}


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="bench/report", description=USAGE.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for name, module in SUITES.items():
        sub = suites.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        sub.add_argument("--quick", action="store_true",
                         help="short runs, one repetition: a smoke check; results go to "
                              "build/release/bench/quick/ unless --out says otherwise")
        sub.add_argument("--json", metavar="FILE",
                         help="report from this Google Benchmark JSON instead of running")
        sub.add_argument("--out", metavar="DIR",
                         help="where to write the results (default docs/results)")
        sub.set_defaults(function=module.report)
    args = parser.parse_args()
    try:
        return args.function(args)
    except ReportError as error:
        print(f"bench/report: {error}", file=sys.stderr)
        return 2
