"""``dynhat data fetch multi30k`` and ``dynhat data vocab``."""

from __future__ import annotations

import argparse

from dynhat.cli.args import integer


def register(sub: argparse._SubParsersAction) -> None:
    actions = sub.add_parser("data", help="datasets and subword vocabularies").add_subparsers(
        dest="action", required=True)
    fetch = actions.add_parser("fetch", help="download (or copy from a local mirror) and verify a dataset")
    fetch.add_argument("dataset", choices=["multi30k"])
    fetch.add_argument("--cache-dir", default=None,
                       help="where to keep it (default $DYNHAT_CACHE or ~/.cache/dynhat; files go to multi30k/)")
    fetch.add_argument("--from", dest="mirror", default=None, metavar="DIR",
                       help="copy from this local folder of the same files instead of downloading")
    fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_fetch)

    vocab = actions.add_parser("vocab", help="train the joint source+target subword vocabulary (sentencepiece BPE)")
    vocab.add_argument("--train-src", required=True, help="training source text, one sentence a line (.gz ok)")
    vocab.add_argument("--train-tgt", required=True, help="training target text, line-aligned with --train-src")
    vocab.add_argument("--size", type=integer(8), default=None, help="number of pieces (default 8000)")
    vocab.add_argument("--out", required=True, help="where to write the sentencepiece model")
    vocab.set_defaults(func=_vocab)


def _fetch(args: argparse.Namespace) -> int:
    from dynhat.data.fetch import fetch_multi30k

    root = fetch_multi30k(args.cache_dir, args.mirror, progress=not args.quiet)
    print(root)
    return 0


def _vocab(args: argparse.Namespace) -> int:
    from dynhat.data.corpus import read_parallel
    from dynhat.data.vocab import DEFAULT_VOCAB_SIZE, Vocabulary

    corpus = read_parallel(args.train_src, args.train_tgt)
    vocab = Vocabulary.train(corpus.src + corpus.tgt, args.size or DEFAULT_VOCAB_SIZE)
    vocab.save(args.out)
    print(f"{args.out}: {len(vocab)} pieces from {len(corpus)} sentence pairs (fingerprint {vocab.fingerprint})")
    return 0
