"""Typed reads of fields from a loaded YAML or JSON mapping.

YAML hands over whatever a file says: ``.nan``, ``true`` where a count belongs, a mapping where a number belongs,
a misspelt optional key that would silently fall back to its default. Every file format reads its fields through
these checks, so a bad value is refused where it enters, naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from dynhat.errors import ConfigError

_MISSING = object()


def _bounds(low: float | None, high: float | None, strict: bool) -> str:
    parts = [] if low is None else [f"{'>' if strict else '>='} {low:g}"]
    return " and ".join([*parts, *([] if high is None else [f"<= {high:g}"])])


def number(data: Mapping[str, Any], key: str, source: str, *, default: Any = _MISSING, low: float | None = None,
           high: float | None = None, strict: bool = False) -> Any:
    """A finite number in its bounds (``low`` excluded when ``strict``); ``default`` where the key is absent or null."""
    value = data.get(key)
    if value is None:
        if default is _MISSING:
            raise ConfigError("missing", source=source, field=key)
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or \
            (low is not None and (value <= low if strict else value < low)) or (high is not None and value > high):
        span = _bounds(low, high, strict)
        raise ConfigError(f"expected a finite number{' ' + span if span else ''}, got {value!r}", source=source,
                          field=key)
    return float(value)


def integer(data: Mapping[str, Any], key: str, source: str, *, default: Any = _MISSING, low: int | None = None,
            high: int | None = None) -> Any:
    """A whole number in its bounds; ``default`` where the key is absent or null."""
    value = data.get(key)
    if value is None:
        if default is _MISSING:
            raise ConfigError("missing", source=source, field=key)
        return default
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or \
            (high is not None and value > high):
        span = _bounds(low, high, False)
        raise ConfigError(f"expected a whole number{' ' + span if span else ''}, got {value!r}", source=source,
                          field=key)
    return value


def integers(data: Mapping[str, Any], key: str, source: str, *, low: int | None = None) -> tuple[int, ...] | None:
    """A list of whole numbers, or None where the key is absent or null."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of whole numbers, got {value!r}", source=source, field=key)
    return tuple(integer({key: v}, key, source, low=low) for v in value)


def text(data: Mapping[str, Any], key: str, source: str) -> str:
    """A string, or a plain number or boolean written where a name belongs (YAML reads ``name: 2`` as a number)."""
    value = data.get(key)
    if (isinstance(value, float) and not math.isfinite(value)) or not isinstance(value, str | int | float):
        raise ConfigError(f"expected a name, got {value!r}", source=source, field=key)
    return str(value)


def mapping(value: Any, source: str, field: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {type(value).__name__}", source=source, field=field)
    return value


def known_keys(data: Mapping[str, Any], known: Iterable[str], source: str, field: str | None = None) -> None:
    """Refuse keys no reader uses: a misspelt optional key would otherwise fall back to its default unnoticed."""
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ConfigError(f"unknown keys {unknown}; known: {sorted(known)}", source=source, field=field)
