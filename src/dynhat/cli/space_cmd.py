"""``dynhat space info`` and ``dynhat config check``."""

from __future__ import annotations

import argparse

from dynhat.cli.args import integer
from dynhat.space import SubTransformerConfig, load_space


def register(sub: argparse._SubParsersAction) -> None:
    space = sub.add_parser("space", help="inspect design spaces").add_subparsers(dest="action", required=True)
    info = space.add_parser("info", help="choices, maximum sizes and exact number of configurations")
    info.add_argument("space", help="a space YAML (HAT keys) or a shipped space's name")
    info.set_defaults(func=_space_info)

    config = sub.add_parser("config", help="SubTransformer configurations").add_subparsers(dest="action",
                                                                                           required=True)
    check = config.add_parser("check", help="validate a HAT SubTransformer YAML against a space")
    check.add_argument("config", help="SubTransformer YAML in HAT's keys")
    check.add_argument("--space", required=True, help="a space YAML or a shipped space's name")
    check.add_argument("--src-len", type=integer(1), default=30, help="source tokens for the MAC count (default 30)")
    check.add_argument("--tgt-len", type=integer(1), default=30, help="decoder steps for the MAC count (default 30)")
    check.add_argument("--vocab", type=integer(1), default=None,
                       help="vocabulary size for embedding/output counts (default: the space's standard)")
    check.set_defaults(func=_config_check)


def _space_info(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    print(f"space: {space.name}" + (f"  ({space.description})" if space.description else ""))
    print("SuperTransformer (maximum sizes):")
    for key in ("encoder-embed-dim", "decoder-embed-dim", "encoder-ffn-embed-dim", "decoder-ffn-embed-dim",
                "encoder-layers", "decoder-layers", "encoder-attention-heads", "decoder-attention-heads", "qkv-dim"):
        print(f"  {key:<40} {space.to_dict()[key]}")
    head = "qkv-dim / heads (HAT)" if space.head_dim is None else f"{space.head_dim} (fixed; fewer heads are cheaper)"
    print(f"  {'head dim':<40} {head}")
    print("choices:")
    for key, choices in space.choice_fields.items():
        print(f"  {key:<40} {list(choices)}")
    count = space.num_configurations()
    print(f"configurations: {count:,} ({count:.3e})")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from dynhat.space.cost import count_macs, count_params, default_vocab

    space = load_space(args.space)
    config = SubTransformerConfig.from_yaml(args.config).validate(space, source=args.config)
    vocab = args.vocab or default_vocab(space)
    params = count_params(config, space, vocab)
    macs = count_macs(config, space, vocab, src_len=args.src_len, tgt_len=args.tgt_len)
    print(f"valid: {args.config} in space {space.name}")
    print(f"id: {config.id}")
    print(f"parameters: {params.total:,} total, {params.non_embedding:,} without the embedding table "
          f"(vocabulary {vocab:,})")
    print(f"multiply-accumulates: {macs:,} (encode {args.src_len} tokens + {args.tgt_len} decoder steps, batch 1)")
    return 0
