"""The model card of a release folder (``card.md``): what a user reads before serving the model.

It states how the weights were made (training facts, the command that reproduces them), how good each operating
point of a reference library is (latency where the library was searched, BLEU on every scored test split, on the
release's own weights) and the sha256 of every other file, so a copy can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from dynhat.inference.points import sentences_text


def model_card(name: str, facts: Mapping[str, Any], points: Sequence[Mapping[str, Any]] | None = None,
               library: Mapping[str, Any] | None = None) -> str:
    """The card's text from the training facts and, where given, a reference library's operating points (rows of
    ``OperatingPoint.to_dict`` plus ``bleu_splits``: {split: BLEU}) and that library's origin (``library``)."""
    lines = [f"# {name}", "", "A dynhat SuperTransformer: every SubTransformer of its design space shares these "
             "weights.", "", "## Training", "", "```yaml", yaml.safe_dump(dict(facts), sort_keys=False).rstrip(),
             "```", *_reproduce(facts)]
    if points:
        lines += _points_section(name, points, library or {})
    return "\n".join(lines) + "\n"


def files_section(sha256: Mapping[str, str]) -> str:
    """The card's last section: each other file's sha256 (the card's own is in ``manifest.json``)."""
    rows = [f"| `{name}` | `{digest}` |" for name, digest in sha256.items()]
    return "\n".join(["## Files", "", "sha256 of each file (the card's own: `manifest.json`, which every load "
                      "checks):", "", "| file | sha256 |", "| --- | --- |", *rows]) + "\n"


def _reproduce(facts: Mapping[str, Any]) -> list[str]:
    """How to make these weights again: the training command recorded at export, else the settings above."""
    command = facts.get("train_command")
    if command:
        steps = ["```bash", str(command)]
    elif facts.get("training_settings"):
        steps = ["Save `training_settings` above as `train.yml` (`dynhat train` reads those keys), then:", "",
                 "```bash", f"dynhat train --config train.yml --run-dir runs/{facts.get('name', 'model')}"]
    else:
        return []
    steps += [*facts.get("released_with", []), "```"]  # every export, in order (export_checkpoint)
    return ["", "## Reproduce", "", *steps]


def _points_section(name: str, points: Sequence[Mapping[str, Any]], library: Mapping[str, Any]) -> list[str]:
    """A table of every point: how a runtime serves it (``served``: fastest, middle, best, yes or no), decoder
    layers, beam, measured latency, the library's BLEU and each split's."""
    splits = list(dict.fromkeys(s for p in points for s in (p.get("bleu_splits") or {})))
    sentences = sentences_text(library.get("bleu_split", "test_2016_flickr"), library.get("bleu_sentences"))
    intro = ("Searched on these weights" + (f" on {library['device']}" if library.get("device") else "")
             + (f", {library['threads']} thread(s)" if library.get("threads") else "")
             + f". Latency: HAT's protocol (30 source tokens, 30 decoder steps), on that machine. BLEU: sacreBLEU "
             f"at the point's beam; *library* on {sentences} (what ranks the served points)"
             + ("; each split column on all of its sentences, translated with this release's weights." if splits
                else ".")
             + f" The library is this release's `points.yml`: `dynhat serve {name} --budget-ms MS` switches between "
             f"its served points, `dynhat translate {name} --point best` (or fastest, middle, a point's id) "
             "translates with one. *Served*: the name a point is selected by, `yes` for the other served points, `no` "
             "where another point is faster and ranks better (`PointLibrary.quality`: the library's BLEU, then "
             "validation loss, then beam).")
    head = ["point", "served", "decoder layers", "beam", "measured ms", "BLEU (library)",
            *(f"BLEU {s}" for s in splits)]
    lines = ["", "## Operating points of the reference library", "", intro, "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in points:
        measured = p.get("measured_ms")
        cells = [p["id"], p.get("served"), p["decoder_layers"], p["beam"],
                 None if measured is None else round(measured, 1), p.get("bleu"),
                 *((p.get("bleu_splits") or {}).get(s) for s in splits)]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return lines
