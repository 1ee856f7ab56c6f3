"""Error types that carry where bad input came from, so the message can name the file, field and allowed values."""

from __future__ import annotations


class DynhatError(Exception):
    """Base class: every error dynhat raises on bad user input."""


class ConfigError(DynhatError, ValueError):
    """A design space or SubTransformer configuration is malformed or outside its space."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.source = source
        self.field = field
        prefix = f"{source}: " if source else ""
        where = f"{field}: " if field else ""
        super().__init__(f"{prefix}{where}{message}")


class DataError(DynhatError, ValueError):
    """A data file is missing, misaligned, empty or undecodable."""


class BudgetUnmeetable(DynhatError):
    """A strict request that no operating point is expected to serve within its budget under the conditions now.

    Refused before any work (nothing is translated, no point is switched): the caller can retry, raise the budget or
    accept a late answer."""

    def __init__(self, budget_ms: float, expected_ms: float, point: str) -> None:
        self.budget_ms, self.expected_ms, self.point = budget_ms, expected_ms, point
        super().__init__(f"no operating point is expected to translate this sentence within {budget_ms:g} ms now: "
                         f"the best choice, {point}, is expected to take {expected_ms:.1f} ms")
