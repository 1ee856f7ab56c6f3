"""Argument types that refuse a bad number where it enters, so no command starts work on a value it cannot use."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the command, the argument and what was expected), exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _span(low: float | None, high: float | None, strict: bool) -> str:
    lower = "" if low is None else f"{'>' if strict else '>='} {low:g}"
    upper = "" if high is None else f"<= {high:g}"
    return " and ".join(part for part in (lower, upper) if part)


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {_span(low, high, False)}, got {text!r}") \
                from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected a whole number {_span(low, high, False)}, got {value}")
        return value

    parse.__name__ = "whole number"
    parse.bounds = (low, high, False)  # type: ignore[attr-defined]  # for the CLI's fuzz tests
    return parse


def real(low: float | None = None, high: float | None = None, *, strict: bool = False) -> Callable[[str], float]:
    """A finite number from ``low`` (excluded when ``strict``) to ``high``; NaN and infinities are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        below = low is not None and (value <= low if strict else value < low)
        if not math.isfinite(value) or below or (high is not None and value > high):
            span = _span(low, high, strict)
            raise argparse.ArgumentTypeError(f"expected a finite number{' ' + span if span else ''}, got {text!r}")
        return value

    parse.__name__ = "number"
    parse.bounds = (low, high, strict)  # type: ignore[attr-defined]
    return parse
