"""Atomic file writes: a reader never sees a half-written checkpoint, CSV or YAML (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import yaml

from dynhat.errors import ConfigError, DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temp file beside ``path``, then rename it over ``path``.

    The file gets the mode a plain ``open`` would give it (0666 less the umask), not mkstemp's 0600, so a file
    keeps its mode when a resumed run rewrites it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete the temp files that writes of ``path`` left when a process was killed mid-write; returns them."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def read_yaml(path: str | Path, what: str = "YAML file") -> Any:
    """The parsed YAML of ``path``; any way the file can be unusable is a ``ConfigError`` naming it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError("file not found", source=str(path))
    if not path.is_file():
        raise ConfigError(f"not a regular file (a {what} was expected)", source=str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"cannot be read ({err.strerror})", source=str(path)) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text (byte {err.start}); a {what} was expected", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {' '.join(str(err).split())}", source=str(path)) from None
    if data is None:  # an empty file would otherwise read as "all defaults" and start work nobody asked for
        raise ConfigError(f"empty; a {what} was expected", source=str(path))
    return data


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file; of a release folder, its manifest's (which holds every file's)."""
    if Path(path).is_dir():
        path = Path(path) / "manifest.json"
    sha = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def read_text(path: str | Path, missing: str = "file not found", encoding: str = "utf-8") -> str:
    """The text of ``path``; a missing or undecodable file is a ``DataError`` that names it (``missing`` says what
    was not found)."""
    path = Path(path)
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
