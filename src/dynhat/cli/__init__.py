"""``dynhat`` command line: thin argparse front-ends, one module per pipeline step, each adding its subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dynhat.errors import DynhatError


def build_parser() -> argparse.ArgumentParser:
    from dynhat.cli import (
        data_cmd,
        hat_cmd,
        latency_cmd,
        release_cmd,
        run_cmd,
        scenario_cmd,
        search_cmd,
        serve_cmd,
        space_cmd,
        train_cmd,
        translate_cmd,
    )

    parser = argparse.ArgumentParser(prog="dynhat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data_cmd, space_cmd, train_cmd, translate_cmd, latency_cmd, search_cmd, scenario_cmd,
                   serve_cmd, run_cmd, hat_cmd, release_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DynhatError as err:
        print(f"dynhat: error: {err}", file=sys.stderr)
        return 2
