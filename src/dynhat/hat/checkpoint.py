"""HAT (fairseq 0.8) checkpoints: read them without fairseq, and write dynhat models back in their layout.

A HAT checkpoint is a pickle of ``{"args": argparse.Namespace, "model": state dict, "optimizer_history",
"extra_state", "last_optimizer_state"}``. It is read with ``torch.load(weights_only=True)`` and only the globals
such a file needs allowed: ``argparse.Namespace`` and fairseq's training meters, which are mapped to an inert
local class so fairseq need not be installed and nothing of theirs runs. Any other global refuses the file: a
pickle can run code while it loads. The optimizer state is loaded as plain tensors and dropped.

dynhat's SuperTransformer uses HAT's state-dict keys and shapes, so the weights map one to one; the design space
comes from HAT's argument names (``encoder_embed_choice``, ...), which are the space YAML's keys with ``_``.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from dynhat.errors import ConfigError, DataError
from dynhat.io import atomic_write
from dynhat.model import ModelSettings, SuperTransformer
from dynhat.space import HAT_KEYS, DesignSpace, SubTransformerConfig

# The design space's fields, named as HAT's args name them (its YAML keys with "_" for "-").
SPACE_ARGS = tuple(f.name for f in fields(DesignSpace) if f.name not in ("head_dim", "normalize_before", "name",
                                                                         "description", "settings"))
# HAT's SubTransformer fields in args (``--encoder-embed-dim-subtransformer`` ...) -> SubTransformerConfig key.
SUBTRANSFORMER_ARGS = {key.replace("-", "_"): key for key in HAT_KEYS}
# Architecture settings dynhat's model implements. A checkpoint that sets another value describes a model dynhat
# would compute differently. An absent one takes HAT's default (base_architecture): the required value, except:
_ABSENT_DEFAULTS = {"share_all_embeddings": False}
REQUIRED_ARGS: dict[str, Any] = {
    "share_all_embeddings": True, "encoder_normalize_before": False, "decoder_normalize_before": False,
    "encoder_learned_pos": False, "decoder_learned_pos": False, "no_token_positional_embeddings": False,
    "activation_fn": "relu", "vocab_original_scaling": False, "adaptive_softmax_cutoff": None,
    "adaptive_input": False,
}  # fmt: skip
# fairseq's buffers that hold no weights: the format version of each stack and a dtype marker of the sinusoid.
HAT_ONLY_BUFFERS = ("encoder.version", "decoder.version", "encoder.embed_positions._float_tensor",
                    "decoder.embed_positions._float_tensor")
FAIRSEQ_VERSION = 3.0
_MAX_POSITIONS = 1024  # fairseq's default when args predate max_source_positions


class _Meter:
    """Stands in for ``fairseq.meters.*`` (training statistics in ``extra_state``): holds their fields, runs nothing."""


_ALLOWED_GLOBALS: list[Any] = [argparse.Namespace] + [
    (_Meter, f"fairseq.meters.{name}") for name in ("AverageMeter", "TimeMeter", "StopwatchMeter")
]
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def read_hat_file(path: str | Path) -> dict[str, Any]:
    """The unpickled checkpoint, after checking it has ``args`` (a Namespace) and ``model`` (a state dict)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: HAT checkpoint not found")
    try:
        with torch.serialization.safe_globals(_ALLOWED_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = _REFUSED_GLOBAL.search(str(err))
        if found:
            raise DataError(f"{path}: refused: the pickle needs the global {found.group(1)}, which a HAT checkpoint "
                            "does not hold (allowed besides tensors: argparse.Namespace and fairseq.meters); "
                            "unpickling it could run code") from None
        lines = str(err).splitlines()
        reason = next((line.strip() for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        raise DataError(f"{path}: not a readable checkpoint ({reason})") from None
    except Exception as err:  # a truncated, foreign or non-torch file
        raise DataError(f"{path}: not a readable checkpoint ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("args"), argparse.Namespace) \
            or not isinstance(state.get("model"), Mapping):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise DataError(f"{path}: not a HAT (fairseq 0.8) checkpoint: expected 'args' (an argparse.Namespace) and "
                        f"'model' (a state dict), found {keys}")
    return state


def space_from_args(args: Mapping[str, Any], source: str) -> DesignSpace:
    """The SuperTransformer and its choices, from HAT's argument names, after checking dynhat computes it as HAT."""
    arch = args.get("arch", "")
    if not str(arch).startswith("transformersuper"):
        raise ConfigError(f"{arch!r} is not one of HAT's SuperTransformer architectures (transformersuper_*)",
                          source=source, field="args.arch")
    for name, expected in REQUIRED_ARGS.items():
        value = args.get(name, _ABSENT_DEFAULTS.get(name, expected))
        if value != expected:
            raise ConfigError(f"is {value!r}; dynhat's model supports only {expected!r}", source=source,
                              field=f"args.{name}")
    for name in ("decoder_output_dim", "decoder_input_dim"):
        if args.get(name, args.get("decoder_embed_dim")) != args.get("decoder_embed_dim"):
            raise ConfigError(f"is {args[name]} but decoder_embed_dim is {args.get('decoder_embed_dim')}; dynhat "
                              "has no projection between them", source=source, field=f"args.{name}")
    missing = [name for name in SPACE_ARGS if args.get(name) is None]
    if missing:
        raise ConfigError(f"the checkpoint's args lack {missing}, so its design space is unknown", source=source)
    depths, arbitrary = args["encoder_layer_num_choice"], args["decoder_arbitrary_ende_attn_choice"]
    if _ints(depths) and _ints(arbitrary) and _ints([args["encoder_layers"]]):  # else from_dict names the field
        refuse_hat_divergence(depths, args["encoder_layers"], arbitrary, source)
    hat_keys = {name.replace("_", "-"): args[name] for name in SPACE_ARGS}
    return DesignSpace.from_dict({"name": Path(source).stem, **hat_keys}, source=source)


def _ints(values: Any) -> bool:
    return isinstance(values, list | tuple) and bool(values) and all(type(v) is int for v in values)


def refuse_hat_divergence(encoder_depths: Any, encoder_layers: int, arbitrary: Any, source: str) -> None:
    """Refuse a space where HAT and dynhat would compute different outputs for the same weights.

    For an encoder shallower than the SuperTransformer, HAT runs the missing layers as identity, so arbitrary
    encoder-decoder attention 1 and 2 attend to copies of the last active layer; dynhat attends to the real last
    2-3 active layers (docs/hat.md).
    """
    if min(encoder_depths) < encoder_layers and max(arbitrary) > -1:
        raise ConfigError(f"encoder depths {list(encoder_depths)} include fewer than the SuperTransformer's "
                          f"{encoder_layers} layers together with arbitrary encoder-decoder attention "
                          f"{list(arbitrary)}: HAT then attends to copies of the last active layer and dynhat to the "
                          "real last layers, so the same weights would translate differently (docs/hat.md)",
                          source=source, field="encoder-layer-num-choice")


def subtransformer_from_args(args: Mapping[str, Any], source: str) -> SubTransformerConfig | None:
    """The SubTransformer a HAT SubTransformer checkpoint was trained as, or None for a SuperTransformer one."""
    given = {key: args[name] for name, key in SUBTRANSFORMER_ARGS.items() if args.get(name) is not None}
    if not given:
        return None
    for key, value in given.items():  # HAT reads only the active layers' entries; sampled configs carry more
        depth = given.get(f"{key.split('-')[0]}-layer-num-subtransformer")
        if isinstance(value, list) and isinstance(depth, int):
            given[key] = value[:depth]
    return SubTransformerConfig.from_dict(given, source=f"{source}: args")


@dataclass
class HatCheckpoint:
    """A HAT checkpoint as dynhat objects: the model (eval mode), its space and, for a SubTransformer checkpoint,
    the SubTransformer it was trained as. ``args`` keeps every HAT argument for reference."""

    model: SuperTransformer
    space: DesignSpace
    subtransformer: SubTransformerConfig | None
    args: dict[str, Any]

    @property
    def source_lang(self) -> str | None:
        return self.args.get("source_lang")

    @property
    def target_lang(self) -> str | None:
        return self.args.get("target_lang")


def load_hat_checkpoint(path: str | Path) -> HatCheckpoint:
    """Read a HAT SuperTransformer or SubTransformer checkpoint into a dynhat SuperTransformer.

    float16 weights (HAT trains WMT models in fp16) are cast to float32.
    """
    source = str(path)
    state = read_hat_file(path)
    args = vars(state["args"])
    space = space_from_args(args, source)
    subtransformer = subtransformer_from_args(args, source)
    if subtransformer is not None:
        subtransformer.validate(space, source=f"{source}: args")
    weights = _dynhat_state_dict(state["model"], source)
    positions = args.get("max_source_positions", _MAX_POSITIONS)
    if args.get("max_target_positions", positions) != positions:
        raise ConfigError(f"max_source_positions {positions} and max_target_positions "
                          f"{args['max_target_positions']} differ; dynhat uses one table for both", source=source)
    if "encoder.embed_tokens.weight" not in weights:
        raise DataError(f"{source}: model.encoder.embed_tokens.weight is absent, so the vocabulary size is unknown")
    vocab_size = weights["encoder.embed_tokens.weight"].shape[0]
    model = SuperTransformer(space, ModelSettings(vocab_size=vocab_size, dropout=args.get("dropout", 0.1),
                                                  attention_dropout=args.get("attention_dropout", 0.0),
                                                  max_positions=positions))
    _check_shapes(model, weights, source)
    model.load_state_dict(weights)
    return HatCheckpoint(model.eval(), space, subtransformer, args)


def _dynhat_state_dict(hat_model: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    weights = {k: v for k, v in hat_model.items() if k not in HAT_ONLY_BUFFERS}
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise DataError(f"{source}: model.{key}: expected a floating-point tensor, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
    embed = [weights.get(f"{stack}.embed_tokens.weight") for stack in ("encoder", "decoder")]
    if all(e is not None for e in embed) and not torch.equal(embed[0], embed[1]):
        raise DataError(f"{source}: encoder.embed_tokens.weight and decoder.embed_tokens.weight differ; dynhat's "
                        "model shares one table (share_all_embeddings)")
    return {k: v.float() for k, v in weights.items()}


def _check_shapes(model: SuperTransformer, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Name the first key that is missing, extra or of another shape, instead of torch's list of all of them."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in weights.items()}
    for key in sorted(ours.keys() | theirs.keys()):
        if ours.get(key) != theirs.get(key):
            found = "absent" if key not in theirs else list(theirs[key])
            expected = "no such weight" if key not in ours else list(ours[key])
            raise DataError(f"{source}: model.{key}: {found} in the checkpoint; the SuperTransformer its args "
                            f"describe has {expected}")


# ---------------------------------------------------------------------------------------------------- writing
def hat_args(model: SuperTransformer, source_lang: str, target_lang: str, data: str,
             subtransformer: SubTransformerConfig | None = None) -> argparse.Namespace:
    """The args HAT's ``TransformerSuperModel.build_model`` and ``load_checkpoint_to_cpu`` read."""
    space, settings = model.space, model.settings
    if space.head_dim is not None:
        raise ConfigError(f"space {space.name!r} fixes head-dim {space.head_dim}; HAT's attention keeps qkv-dim "
                          "fixed and has no such setting", field="head-dim")
    if space.normalize_before:
        raise ConfigError(f"space {space.name!r} is pre-norm; HAT's SuperTransformer is post-norm only",
                          field="normalize-before")
    if space.encoder_embed_dim != space.decoder_embed_dim:
        raise ConfigError(f"space {space.name!r} has encoder-embed-dim {space.encoder_embed_dim} and "
                          f"decoder-embed-dim {space.decoder_embed_dim}; HAT shares one embedding table only "
                          "between equal widths", field="decoder-embed-dim")
    refuse_hat_divergence(space.encoder_layer_num_choice, space.encoder_layers,
                          space.decoder_arbitrary_ende_attn_choice, f"space {space.name!r}")
    values: dict[str, Any] = {
        "arch": "transformersuper_wmt_en_de", "task": "translation", "data": data,
        "source_lang": source_lang, "target_lang": target_lang, "left_pad_source": True, "left_pad_target": False,
        "max_source_positions": settings.max_positions, "max_target_positions": settings.max_positions,
        "dropout": settings.dropout, "attention_dropout": settings.attention_dropout, "activation_dropout": 0.0,
        "share_decoder_input_output_embed": True, "decoder_output_dim": space.decoder_embed_dim,
        "decoder_input_dim": space.decoder_embed_dim, "adaptive_softmax_dropout": 0, "encoder_embed_path": None,
        "decoder_embed_path": None, "get_attn": False, "init_method": "xavier", "fp16": False,
        "train_subtransformer": subtransformer is not None, **REQUIRED_ARGS,
    }  # fmt: skip
    values.update({name: _plain(getattr(space, name)) for name in SPACE_ARGS})
    config = subtransformer.validate(space).to_dict() if subtransformer is not None else {}
    values.update({name: config.get(key) for name, key in SUBTRANSFORMER_ARGS.items()})
    return argparse.Namespace(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def hat_state_dict(model: SuperTransformer) -> OrderedDict[str, torch.Tensor]:
    """HAT's ``model`` entry: dynhat's weights (one shared, row-major embedding) plus fairseq's buffers."""
    weights = model.state_dict()
    embed = weights["encoder.embed_tokens.weight"].detach().contiguous()
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for stack in ("encoder", "decoder"):
        out[f"{stack}.version"] = torch.tensor([FAIRSEQ_VERSION])
        out[f"{stack}.embed_tokens.weight"] = embed
        out[f"{stack}.embed_positions._float_tensor"] = torch.zeros(1)
        out.update((k, v.detach().clone()) for k, v in weights.items()
                   if k.startswith(f"{stack}.") and not k.endswith("embed_tokens.weight"))
    return out


def save_hat_checkpoint(path: str | Path, model: SuperTransformer, source_lang: str, target_lang: str,
                        data: str = ".", subtransformer: SubTransformerConfig | None = None) -> None:
    """Write ``model`` as HAT's ``checkpoint_utils.save_state`` would, without optimizer state.

    ``data`` is the folder HAT's translation task reads ``dict.<lang>.txt`` from; ``optimizer_history`` and
    ``extra_state`` hold what fairseq 0.8's loader requires of them (no meters, so the file loads with
    ``weights_only=True`` and only ``argparse.Namespace`` allowed).
    """
    state = {
        "args": hat_args(model, source_lang, target_lang, data, subtransformer),
        "model": hat_state_dict(model),
        "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                               "num_updates": 0}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": 0}, "val_loss": None},
    }
    atomic_write(path, lambda handle: torch.save(state, handle))
