"""``dynhat`` command line: thin argparse front-ends, one module per pipeline step, each adding its subcommands."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from dynhat.cli.args import Parser
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

    parser = Parser(prog="dynhat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data_cmd, space_cmd, train_cmd, translate_cmd, latency_cmd, search_cmd, scenario_cmd,
                   serve_cmd, run_cmd, hat_cmd, release_cmd):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success; 2 with one line on bad input (argparse's convention); 1 with one line on an internal
    error, which is a bug to report; never a traceback."""
    args = build_parser().parse_args(argv)
    # the command as typed, recorded in the files that commands write (an operating-point library's `commands`)
    args.invocation = shlex.join(["dynhat", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except DynhatError as err:
        print(f"dynhat: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:  # bad values or files that got past the loaders' own checks
        where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
        print(f"dynhat: error: {where}{_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dynhat: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        print(f"dynhat: internal error, a bug: please report it with the command that caused it "
              f"({type(err).__name__}: {_one_line(err)})", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    """Messages from libraries (torch.load's, say) span lines; a command's error is one line for logs and scripts."""
    return " ".join(str(err).split())
