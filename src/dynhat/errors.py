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
