"""Atomic file writes: a reader never sees a half-written checkpoint, CSV or YAML (temp file, fsync, rename)."""

from __future__ import annotations

import hashlib
import json
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


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; missing, unreadable or not an object is a ``DataError`` naming the file
    (``what``: the kind of folder it belongs to, for the missing case)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found (not a {what}?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def write_manifest(folder: str | Path, names: list[str], fmt: str) -> dict[str, str]:
    """Write ``folder/manifest.json``: ``fmt`` and the SHA-256 of each of ``names`` (paths inside ``folder``).
    Written last, so a folder with a manifest is complete."""
    folder = Path(folder)
    sha256 = {name: file_sha256(folder / name) for name in names}
    atomic_write_text(folder / "manifest.json", json.dumps({"format": fmt, "sha256": sha256}, indent=1))
    return sha256


def check_manifest(folder: str | Path, fmt: str, what: str, required: tuple[str, ...] = ()) -> dict[str, str]:
    """Check every file ``folder/manifest.json`` lists against its SHA-256 (``what`` names the kind of folder in
    errors); returns the listing."""
    folder = Path(folder)
    path = folder / "manifest.json"
    manifest = read_json(path, what)
    listed = manifest.get("sha256")
    if manifest.get("format") != fmt or not isinstance(listed, dict) or any(n not in listed for n in required):
        raise DataError(f"{path}: not a {what} manifest (format {fmt!r})")
    for name, expected in listed.items():
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file}: listed in the manifest but missing")
        actual = file_sha256(file)
        if actual != expected:
            raise DataError(f"{file}: sha256 {actual} does not match the manifest's {expected}: the file was "
                            "changed or damaged; export or download it again")
    return listed


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
