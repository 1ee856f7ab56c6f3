"""Packages whose names are imported on first use, so a light command (``dynhat data fetch``, reading a fairseq
dictionary, reading an operating-point library) does not pay for importing torch or the search's optimisers."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_getattr(package: str, homes: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that exports the names ``homes`` lists under each submodule,
    importing that submodule when one of its names is first used."""
    where = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return __getattr__
