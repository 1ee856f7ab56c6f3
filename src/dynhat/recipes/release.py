"""Releasing a trained SuperTransformer with a model card that states each operating point's BLEU on whole test
splits, computed on the release's own weights (``dynhat export --points LIB --bleu-splits ...``).

The library's own BLEU is on the few test sentences its search scored with; a user choosing a model wants the
standard test sets in full, and for the weights that ship (rounded to bf16 or fp16), not the checkpoint's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynhat.data.corpus import ParallelCorpus
from dynhat.data.fetch import SPLITS, fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.errors import DataError
from dynhat.inference.points import OperatingPoint
from dynhat.inference.release import PointScorer, export_checkpoint
from dynhat.search.decoding import point_bleu

#: The test splits a Multi30k En-De card reports.
CARD_SPLITS = ("test_2016_flickr", "test_2017_flickr")


def split_scorer(splits: Sequence[str], cache_dir: str | None = None, mirror: str | Path | None = None,
                 progress: bool = True) -> PointScorer:
    """A scorer of operating points: sacreBLEU at the point's beam on every sentence of each Multi30k split. The
    splits' names are checked now; the data is fetched on the first point (after the library has been read)."""
    unknown = [s for s in splits if s not in SPLITS or s in ("train", "val")]
    if unknown:
        raise DataError(f"--bleu-splits: unknown Multi30k test split {unknown[0]!r}; expected some of "
                        f"{[s for s in SPLITS if s.startswith('test')]}")
    corpora: dict[str, ParallelCorpus] = {}

    def score(model: Any, vocab: Any, point: OperatingPoint) -> Mapping[str, float]:
        if not corpora:
            local = shared_data_dir() / "multi30k"
            root = fetch_multi30k(cache_dir, mirror if mirror is not None or not local.is_dir() else local,
                                  progress=False)
            corpora.update({split: load_multi30k(split, root) for split in splits})
        scores = {split: point_bleu(model, vocab, point.config, corpus, point.beam)
                  for split, corpus in corpora.items()}
        if progress:
            print(f"  {point.id}: " + ", ".join(f"{s} {b}" for s, b in scores.items()), flush=True)
        return scores

    return score


def export_scored(checkpoint: str | Path, out_dir: str | Path, dtype: str = "bf16", points: str | Path | None = None,
                  name: str | None = None, train_command: str | None = None, splits: Sequence[str] = CARD_SPLITS,
                  cache_dir: str | None = None, mirror: str | Path | None = None) -> Path:
    """``export_checkpoint`` with every point of ``points`` scored on ``splits`` (none: the library's BLEU only)."""
    score = split_scorer(splits, cache_dir, mirror) if points is not None and splits else None
    return export_checkpoint(checkpoint, out_dir, dtype, points, name, train_command, score)
