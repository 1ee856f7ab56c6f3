"""Step 3 of the pipeline (data): corpora, the Multi30k fetcher, subword vocabulary and token batching.

Names are imported on first use, so ``dynhat data fetch`` does not pay for importing torch and sentencepiece.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynhat.lazy import lazy_getattr

if TYPE_CHECKING:
    from dynhat.data.batching import Batch, TokenBatcher, collate
    from dynhat.data.corpus import (
        ParallelCorpus,
        read_lines,
        read_parallel,
        read_tsv,
        write_lines,
        write_parallel,
        write_tsv,
    )
    from dynhat.data.fetch import FILES, SPLITS, default_cache_dir, fetch_multi30k, load_multi30k, shared_data_dir
    from dynhat.data.vocab import DEFAULT_VOCAB_SIZE, Vocabulary

__all__ = ["DEFAULT_VOCAB_SIZE", "FILES", "SPLITS", "Batch", "ParallelCorpus", "TokenBatcher", "Vocabulary", "collate",
           "default_cache_dir", "fetch_multi30k", "load_multi30k", "read_lines", "read_parallel", "read_tsv",
           "shared_data_dir", "write_lines", "write_parallel", "write_tsv"]
__getattr__ = lazy_getattr(__name__, {
    "batching": ("Batch", "TokenBatcher", "collate"),
    "corpus": ("ParallelCorpus", "read_lines", "read_parallel", "read_tsv", "write_lines", "write_parallel",
               "write_tsv"),
    "fetch": ("FILES", "SPLITS", "default_cache_dir", "fetch_multi30k", "load_multi30k", "shared_data_dir"),
    "vocab": ("DEFAULT_VOCAB_SIZE", "Vocabulary"),
})
