"""Releasing a trained SuperTransformer with a model card that states each operating point's BLEU on whole test
splits, computed on the release's own weights as they ship (rounded to bf16 or fp16, or fp32): ``dynhat export
--points LIB --bleu-splits ...``; and exporting a library's points to an engine folder, each scored through the
engine (``dynhat export --engine ctranslate2``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dynhat.data.corpus import ParallelCorpus
from dynhat.data.fetch import SPLITS, fetch_multi30k, load_multi30k, shared_data_dir
from dynhat.errors import DataError
from dynhat.inference.engine import EngineScorer, export_engine
from dynhat.inference.points import OperatingPoint
from dynhat.inference.release import PointScorer, export_checkpoint
from dynhat.search.decoding import point_bleu
from dynhat.translate.bleu import sacrebleu_bleu

#: The test splits a Multi30k En-De card reports.
CARD_SPLITS = ("test_2016_flickr", "test_2017_flickr")


def _split_loader(splits: Sequence[str], cache_dir: str | None, mirror: str | Path | None
                  ) -> Callable[[], dict[str, ParallelCorpus]]:
    """The Multi30k test ``splits`` (names checked now), fetched on first use (after the library has been read)."""
    unknown = [s for s in splits if s not in SPLITS or s in ("train", "val")]
    if unknown:
        raise DataError(f"--bleu-splits: unknown Multi30k test split {unknown[0]!r}; expected some of "
                        f"{[s for s in SPLITS if s.startswith('test')]}")
    corpora: dict[str, ParallelCorpus] = {}

    def load() -> dict[str, ParallelCorpus]:
        if not corpora:
            local = shared_data_dir() / "multi30k"
            root = fetch_multi30k(cache_dir, mirror if mirror is not None or not local.is_dir() else local,
                                  progress=False)
            corpora.update({split: load_multi30k(split, root) for split in splits})
        return corpora

    return load


def _report(point: OperatingPoint, scores: Mapping[str, float], progress: bool) -> Mapping[str, float]:
    if progress:
        print(f"  {point.id}: " + ", ".join(f"{s} {b}" for s, b in scores.items()), flush=True)
    return scores


def split_scorer(splits: Sequence[str], cache_dir: str | None = None, mirror: str | Path | None = None,
                 progress: bool = True) -> PointScorer:
    """A scorer of operating points: sacreBLEU at the point's beam on every sentence of each Multi30k split."""
    corpora = _split_loader(splits, cache_dir, mirror)

    def score(model: Any, vocab: Any, point: OperatingPoint) -> Mapping[str, float]:
        return _report(point, {split: point_bleu(model, vocab, point.config, corpus, point.beam)
                               for split, corpus in corpora().items()}, progress)

    return score


def engine_scorer(splits: Sequence[str], cache_dir: str | None = None, mirror: str | Path | None = None
                  ) -> EngineScorer:
    """``split_scorer`` through a point's exported engine (its own quantization and beam search)."""
    corpora = _split_loader(splits, cache_dir, mirror)

    def score(translator: Any, point: OperatingPoint) -> Mapping[str, float]:
        return _report(point, {split: round(sacrebleu_bleu(translator.translate(c.src), c.tgt)[0], 2)
                               for split, c in corpora().items()}, progress=True)

    return score


def export_engine_scored(checkpoint: str | Path, points: str | Path, out_dir: str | Path,
                         quantization: str = "int8", splits: Sequence[str] = CARD_SPLITS,
                         cache_dir: str | None = None, mirror: str | Path | None = None) -> Path:
    """``export_engine`` with every served point scored through the engine on ``splits`` (none: not scored)."""
    score = engine_scorer(splits, cache_dir, mirror) if splits else None
    return export_engine(checkpoint, points, out_dir, "ctranslate2", quantization, score)


def export_scored(checkpoint: str | Path, out_dir: str | Path, dtype: str = "bf16", points: str | Path | None = None,
                  name: str | None = None, train_command: str | None = None, splits: Sequence[str] = CARD_SPLITS,
                  cache_dir: str | None = None, mirror: str | Path | None = None) -> Path:
    """``export_checkpoint`` with every point of ``points`` scored on ``splits`` (none: the library's BLEU only)."""
    score = split_scorer(splits, cache_dir, mirror) if points is not None and splits else None
    return export_checkpoint(checkpoint, out_dir, dtype, points, name, train_command, score)
