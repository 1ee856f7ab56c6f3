from __future__ import annotations

import hashlib
import io
import re
import shutil
import urllib.error
from pathlib import Path

import pytest

from dynhat.cli import main
from dynhat.data import fetch
from dynhat.data.fetch import (
    FILES,
    LANGS,
    SPLITS,
    default_cache_dir,
    fetch_multi30k,
    load_multi30k,
    shared_data_dir,
)
from dynhat.errors import DataError


def _fake_files(monkeypatch: pytest.MonkeyPatch, mirror: Path) -> dict[str, bytes]:
    """A small stand-in for the 8 Multi30k files, with the checksum table patched to match them."""
    import gzip

    contents = {}
    for split in SPLITS:
        for lang in LANGS:
            lines = "".join(f"{split} {lang} sentence {i}\n" for i in range(3))
            contents[f"{split}.{lang}.gz"] = gzip.compress(lines.encode(), mtime=0)
    mirror.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (mirror / name).write_bytes(data)
    monkeypatch.setattr(fetch, "FILES", {n: (len(d), hashlib.sha256(d).hexdigest()) for n, d in contents.items()})
    return contents


def test_table_covers_every_split_and_language() -> None:
    assert sorted(FILES) == sorted(f"{s}.{lang}.gz" for s in SPLITS for lang in LANGS)
    assert all(size > 0 and re.fullmatch(r"[0-9a-f]{64}", sha) for size, sha in FILES.values())


def test_default_locations_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DYNHAT_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DYNHAT_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "dynhat"
    monkeypatch.setenv("DYNHAT_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.delenv("DYNHAT_DATA")
    monkeypatch.chdir(tmp_path)
    assert shared_data_dir() == (tmp_path / ".." / "shared" / "data").resolve()


def test_mirror_copy_is_verified_and_loadable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_files(monkeypatch, tmp_path / "mirror")
    monkeypatch.setenv("DYNHAT_CACHE", str(tmp_path / "cache"))
    root = fetch_multi30k(mirror=tmp_path / "mirror", progress=False)
    assert root == tmp_path / "cache" / "multi30k"
    assert sorted(p.name for p in root.iterdir()) == sorted(fetch.FILES)
    corpus = load_multi30k("val", root)
    assert (corpus.src[1], corpus.tgt[1], corpus.name) == ("val en sentence 1", "val de sentence 1", "val")


def test_valid_files_are_skipped_and_bad_ones_fetched_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    contents = _fake_files(monkeypatch, tmp_path / "mirror")
    root = fetch_multi30k(tmp_path / "cache", tmp_path / "mirror", progress=False)
    (root / "val.de.gz").write_bytes(b"damaged")
    copied: list[str] = []
    original = fetch._copy

    def spy(source: Path):  # type: ignore[no-untyped-def]
        copied.append(source.name)
        return original(source)

    monkeypatch.setattr(fetch, "_copy", spy)
    fetch_multi30k(tmp_path / "cache", tmp_path / "mirror", progress=False)
    assert copied == ["val.de.gz"]
    assert (root / "val.de.gz").read_bytes() == contents["val.de.gz"]


@pytest.mark.parametrize("damage", ["size", "sha256"])
def test_checksum_mismatch_is_named_and_not_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 damage: str) -> None:
    contents = _fake_files(monkeypatch, tmp_path / "mirror")
    bad = tmp_path / "mirror" / "test_2016_flickr.de.gz"
    data = contents[bad.name]
    bad.write_bytes(data + b"x" if damage == "size" else data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DataError) as info:
        fetch_multi30k(tmp_path / "cache", tmp_path / "mirror", progress=False)
    assert str(info.value).startswith(f"{bad}: {damage} ")
    assert "the file was not kept" in str(info.value)
    left = [p.name for p in (tmp_path / "cache" / "multi30k").iterdir()]
    assert bad.name not in left and not [n for n in left if n.endswith(".tmp")]


def test_mirror_problems_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'nowhere'}: mirror folder not found")):
        fetch_multi30k(tmp_path / "cache", tmp_path / "nowhere", progress=False)
    _fake_files(monkeypatch, tmp_path / "mirror")
    (tmp_path / "mirror" / "train.en.gz").unlink()
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'mirror' / 'train.en.gz'}: not found in the mirror")):
        fetch_multi30k(tmp_path / "cache", tmp_path / "mirror", progress=False)


def test_download_path_writes_verified_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    contents = _fake_files(monkeypatch, tmp_path / "mirror")
    requested: list[str] = []

    def fake_urlopen(request, timeout):  # type: ignore[no-untyped-def]
        requested.append(request.full_url)
        return io.BytesIO(contents[request.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(fetch.urllib.request, "urlopen", fake_urlopen)
    root = fetch_multi30k(tmp_path / "cache", progress=False)
    assert sorted(p.name for p in root.iterdir()) == sorted(contents)
    assert "https://github.com/multi30k/dataset/raw/master/data/task1/raw/train.en.gz" in requested


def test_download_failure_names_the_url_and_the_offline_option(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    def offline(request, timeout):  # type: ignore[no-untyped-def]
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(fetch.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"https://github\.com/multi30k/.*\.gz: download failed .*--from DIR"):
        fetch_multi30k(tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache" / "multi30k").iterdir())


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown Multi30k split 'test2016'"):
        load_multi30k("test2016", tmp_path)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'val.en.gz'}: file not found; run `dynhat data")):
        load_multi30k("val", tmp_path)


def test_cli_fetch_error_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "multi30k", "--cache-dir", str(tmp_path), "--from", str(tmp_path / "no")]) == 2
    assert "mirror folder not found" in capsys.readouterr().err


@pytest.fixture
def real_mirror() -> Path:
    mirror = shared_data_dir() / "multi30k"
    if not mirror.is_dir():
        pytest.skip(f"real Multi30k files not found at {mirror} (set DYNHAT_DATA)")
    return mirror


@pytest.mark.shared_data
def test_real_mirror_fetch_verifies_all_eight_files(real_mirror: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "fetch", "multi30k", "--cache-dir", str(tmp_path), "--from", str(real_mirror)]) == 0
    root = Path(capsys.readouterr().out.strip())
    assert root == tmp_path / "multi30k"
    assert sorted(p.name for p in root.iterdir()) == sorted(FILES)
    assert all(fetch.verify_file(root / name, name) is None for name in FILES)
    sizes = {split: len(load_multi30k(split, root)) for split in SPLITS}
    assert sizes == {"train": 29000, "val": 1014, "test_2016_flickr": 1000, "test_2017_flickr": 1000}


@pytest.mark.shared_data
def test_real_mirror_with_a_corrupt_file_is_rejected(real_mirror: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    shutil.copytree(real_mirror, mirror)
    (mirror / "val.de.gz").chmod(0o644)
    data = (mirror / "val.de.gz").read_bytes()
    (mirror / "val.de.gz").write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(DataError, match=re.escape(f"{mirror / 'val.de.gz'}: sha256 ")):
        fetch_multi30k(tmp_path / "cache", mirror, progress=False)
    assert not (tmp_path / "cache" / "multi30k" / "val.de.gz").exists()
