"""Multi30k task 1 (En-De, raw text): download from its public repository, or copy from a local mirror, and verify.

Each file is checked against its known size and SHA-256; a file that does not match is deleted and reported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from dynhat.data.corpus import ParallelCorpus, read_parallel
from dynhat.errors import DataError

URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/{name}"
SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr")
# name -> (bytes, sha256) of the public files.
FILES = {
    "train.en.gz": (568929, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    "train.de.gz": (637044, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    "val.en.gz": (21650, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    "val.de.gz": (24681, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    "test_2016_flickr.en.gz": (21077, "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    "test_2016_flickr.de.gz": (22890, "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    "test_2017_flickr.en.gz": (19138, "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074"),
    "test_2017_flickr.de.gz": (21471, "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("DYNHAT_CACHE", Path.home() / ".cache" / "dynhat"))


def shared_data_dir() -> Path:
    """Where the project's real data lives for tests and CI: ``$DYNHAT_DATA`` or ``../shared/data``."""
    return Path(os.environ.get("DYNHAT_DATA", "../shared/data")).resolve()


def _verify(path: Path, name: str) -> str | None:
    """None when ``path`` is the expected file, else what is wrong."""
    size, digest = FILES[name]
    actual = path.stat().st_size
    if actual != size:
        return f"size {actual} bytes, expected {size}"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return None if sha == digest else f"sha256 {sha}, expected {digest}"


def fetch_multi30k(root: str | Path | None = None, mirror: str | Path | None = None, progress: bool = True) -> Path:
    """Make ``root/multi30k`` hold all 8 verified files; returns that folder."""
    target = Path(root or cache_dir()) / "multi30k"
    target.mkdir(parents=True, exist_ok=True)
    for name in tqdm(FILES, desc="multi30k", disable=not progress, unit="file"):
        final = target / name
        if final.exists() and _verify(final, name) is None:
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", dir=target)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if mirror is not None:
                source = Path(mirror) / name
                if not source.is_file():
                    raise DataError(f"{source}: not in the mirror folder {mirror}")
                shutil.copyfile(source, tmp)
            else:
                try:
                    urllib.request.urlretrieve(URL.format(name=name), tmp)
                except OSError as err:
                    raise DataError(f"{URL.format(name=name)}: download failed ({err}); "
                                    "use --from DIR to copy from a local mirror") from None
            problem = _verify(tmp, name)
            if problem:
                origin = Path(mirror) / name if mirror is not None else URL.format(name=name)
                raise DataError(f"{origin}: {problem}; the file was not kept")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def load_multi30k(split: str, root: str | Path) -> ParallelCorpus:
    """One split, English -> German, from a folder filled by ``fetch_multi30k``."""
    if split not in SPLITS:
        raise DataError(f"unknown Multi30k split {split!r}; expected one of {list(SPLITS)}")
    root = Path(root)
    return read_parallel(root / f"{split}.en.gz", root / f"{split}.de.gz", "en", "de", split)
