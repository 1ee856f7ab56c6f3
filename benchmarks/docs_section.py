"""Replace one ``## `` section of a markdown file in docs/, keeping the others (benchmarks share the files)."""

from __future__ import annotations

from pathlib import Path

from dynhat.io import atomic_write_text


def write_section(path: Path, heading: str, section: str, title: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"{title}\n\n"
    if heading in text:
        head, rest = text.split(heading, 1)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)
