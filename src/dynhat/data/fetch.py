"""Multi30k task 1 (English-German raw captions): download from its public repository or copy from a local mirror.

Every file is checked against the size and SHA-256 recorded below, whichever way it arrives: BLEU numbers are
only comparable when everyone scores the same test set, and a truncated download must never reach training.
A file is written under a temporary name and renamed only once verified, so the cache never holds a bad file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from tqdm import tqdm

from dynhat.data.corpus import ParallelCorpus, read_parallel
from dynhat.errors import DataError

URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}"
SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr")
LANGS = ("en", "de")
#: name -> (size in bytes, SHA-256) of the public files, computed from a verified copy of the repository's files.
FILES: dict[str, tuple[int, str]] = {
    "train.en.gz": (568929, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    "train.de.gz": (637044, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    "val.en.gz": (21650, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    "val.de.gz": (24681, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    "test_2016_flickr.en.gz": (21077, "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    "test_2016_flickr.de.gz": (22890, "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    "test_2017_flickr.en.gz": (19138, "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074"),
    "test_2017_flickr.de.gz": (21471, "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee"),
}
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """``$DYNHAT_CACHE``, else ``~/.cache/dynhat``: one setting moves every download (CI caches, shared disks)."""
    env = os.environ.get("DYNHAT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dynhat"


def shared_data_dir() -> Path:
    """The project's real data for tests and CI: ``$DYNHAT_DATA``, else ``../shared/data`` (from the cwd)."""
    return Path(os.environ.get("DYNHAT_DATA", "../shared/data")).expanduser().resolve()


def _file_digest(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
    return path.stat().st_size, sha.hexdigest()


def verify_file(path: Path, name: str) -> str | None:
    """None when ``path`` holds the expected ``name``, else what differs (size first: it is cheaper to explain)."""
    expected_size, expected_sha = FILES[name]
    size, sha = _file_digest(path)
    if size != expected_size:
        return f"size {size} bytes, expected {expected_size}"
    if sha != expected_sha:
        return f"sha256 {sha}, expected {expected_sha}"
    return None


def _copy_stream(source: IO[bytes], target: IO[bytes], bar: tqdm) -> None:
    for chunk in iter(lambda: source.read(_CHUNK), b""):
        target.write(chunk)
        bar.update(len(chunk))


def _download(url: str) -> Callable[[IO[bytes], tqdm], None]:
    def fill(target: IO[bytes], bar: tqdm) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "dynhat-fetch"})
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                _copy_stream(response, target, bar)
        except (urllib.error.URLError, OSError) as err:
            raise DataError(f"{url}: download failed ({err}); without network access, copy the files from a "
                            "local mirror folder with `dynhat data fetch multi30k --from DIR`") from None

    return fill


def _copy(source: Path) -> Callable[[IO[bytes], tqdm], None]:
    def fill(target: IO[bytes], bar: tqdm) -> None:
        if not source.is_file():
            raise DataError(f"{source}: not found in the mirror folder {source.parent}")
        with source.open("rb") as handle:
            _copy_stream(handle, target, bar)

    return fill


def _fetch_one(name: str, target_dir: Path, origin: str, fill: Callable[[IO[bytes], tqdm], None],
               bar: tqdm) -> None:
    """Fill a temp file beside the target, verify it, then rename: the final name only ever holds a good file."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=target_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle, bar)
            handle.flush()
            os.fsync(handle.fileno())
        problem = verify_file(tmp, name)
        if problem:
            raise DataError(f"{origin}: {problem}; the file was not kept (a corrupt or different copy)")
        os.replace(tmp, target_dir / name)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_multi30k(cache_dir: str | Path | None = None, mirror: str | Path | None = None,
                   progress: bool = True) -> Path:
    """Make ``<cache_dir>/multi30k`` hold all 8 verified files and return that folder.

    Files already there and valid are kept; anything else is fetched again, from ``mirror`` (a folder holding
    the same file names) when given, else from the public repository.
    """
    target_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target_dir = target_dir / "multi30k"
    mirror_dir = Path(mirror).expanduser() if mirror is not None else None
    if mirror_dir is not None:
        if not mirror_dir.is_dir():
            raise DataError(f"{mirror_dir}: mirror folder not found")
        if not any((mirror_dir / name).exists() for name in FILES) and (mirror_dir / "multi30k").is_dir():
            mirror_dir = mirror_dir / "multi30k"  # a whole data folder was given, e.g. $DYNHAT_DATA
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{target_dir}: cannot create the cache folder ({err})") from None
    missing = [name for name in FILES
               if not (target_dir / name).is_file() or verify_file(target_dir / name, name) is not None]
    total = sum(FILES[name][0] for name in missing)
    with tqdm(total=total, unit="B", unit_scale=True, desc="multi30k", disable=not progress or not missing) as bar:
        for name in missing:
            if mirror_dir is not None:
                origin, fill = str(mirror_dir / name), _copy(mirror_dir / name)
            else:
                origin = URL.format(name=name)
                fill = _download(origin)
            bar.set_postfix_str(name)
            _fetch_one(name, target_dir, origin, fill, bar)
    return target_dir


def multi30k_paths(split: str, root: str | Path) -> tuple[Path, Path]:
    """English and German files of ``split`` under ``root`` (a folder returned by ``fetch_multi30k``)."""
    if split not in SPLITS:
        raise DataError(f"unknown Multi30k split {split!r}; expected one of {list(SPLITS)}")
    root = Path(root)
    return root / f"{split}.en.gz", root / f"{split}.de.gz"


def load_multi30k(split: str, root: str | Path) -> ParallelCorpus:
    """One split, English -> German; a missing file points at ``dynhat data fetch``."""
    src, tgt = multi30k_paths(split, root)
    for path in (src, tgt):
        if not path.is_file():
            raise DataError(f"{path}: file not found; run `dynhat data fetch multi30k` (or pass the folder it "
                            "printed)")
    return read_parallel(src, tgt, "en", "de", split)

