"""CTranslate2 as an engine for an operating point: exact export, and a translator with dynhat's interface.

``export_ctranslate2`` writes one SubTransformer (of a SuperTransformer or a dense model) as a CTranslate2 model
folder with the same numbers: each projection, norm and embedding copied from the point's weight record, the
sinusoidal positions as an explicit table (fairseq's numbering: rows from ``padding_idx + 1``), ``</s>`` as the
decoder's first token, eos appended to the source, LayerNorm eps 1e-5. CTranslate2 describes a stack with one
head count and one head width for all its layers and attends to the encoder's last layer only, so a point with
per-layer heads or arbitrary encoder-decoder attention is refused, naming the field. ``quantization`` ("int8",
"int8_float32", ...) is CTranslate2's own; a float32 export can also be loaded with ``compute_type="int8"``.

``CT2Translator`` translates sentences with such a folder like ``dynhat.translate.Translator`` does (greedy for
beam 1, fairseq's length penalty, per-sentence length limit, bos and pad never generated) and returns dynhat
``Hypothesis`` objects, so benchmarks and the runtime treat both engines alike. Needs ``pip install
dynhat[engines]``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynhat.errors import DataError
from dynhat.translate.interface import DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B, Hypothesis, TextVocabulary

if TYPE_CHECKING:  # the export needs torch; translating with an exported folder does not
    from torch import Tensor

    from dynhat.inference.points import OperatingPoint
    from dynhat.model.seq2seq import Seq2SeqModel
    from dynhat.model.weights import AttentionWeights, NormWeights, SubTransformerWeights
    from dynhat.space.config import SubTransformerConfig

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's ids 0-3, which every dynhat vocabulary keeps


def _ct2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise DataError("CTranslate2 is not installed: pip install 'dynhat[engines]'") from None
    return ctranslate2


def check_expressible(w: SubTransformerWeights) -> None:
    """Refuse (``DataError`` naming the field) a SubTransformer that CTranslate2's Transformer cannot describe."""
    c = w.config
    if any(layer.attended != 1 for layer in w.decoder):
        raise DataError(f"{c.id}: decoder_arbitrary_ende_attn: CTranslate2 attends to the last encoder layer only; "
                        f"expected -1 in every decoder layer, got {list(c.decoder_arbitrary_ende_attn)}")
    stacks = (("encoder_self_attention_heads", [layer.self_attn for layer in w.encoder]),
              ("decoder_self_attention_heads", [layer.self_attn for layer in w.decoder]),
              ("decoder_ende_attention_heads", [layer.cross_attn for layer in w.decoder]))
    for name, attns in stacks:
        if len({(a.heads, a.head_dim) for a in attns}) > 1:
            raise DataError(f"{c.id}: {name}: CTranslate2 gives every layer of a stack the same heads; expected "
                            f"one value, got {[a.heads for a in attns]}")
    decoder = [layer.self_attn for layer in w.decoder] + [layer.cross_attn for layer in w.decoder]
    if len({(a.heads, a.head_dim) for a in decoder}) > 1:
        raise DataError(f"{c.id}: decoder_ende_attention_heads: CTranslate2 gives self- and encoder-decoder "
                        f"attention the same heads; expected {c.decoder_self_attention_heads[0]}, got "
                        f"{c.decoder_ende_attention_heads[0]}")


def expressible(config: SubTransformerConfig) -> SubTransformerConfig:
    """The nearest configuration CTranslate2 can express: every encoder layer with the first layer's heads, every
    decoder attention (self and encoder-decoder) with the first decoder layer's self-attention heads, and
    encoder-decoder attention on the last encoder layer; widths and depths kept. What ``dynhat search --engine
    ctranslate2`` passes every candidate through."""
    from dataclasses import replace

    enc, dec, n = config.encoder_self_attention_heads[0], config.decoder_self_attention_heads[0], \
        config.decoder_layer_num
    return replace(config, encoder_self_attention_heads=(enc,) * config.encoder_layer_num,
                   decoder_self_attention_heads=(dec,) * n, decoder_ende_attention_heads=(dec,) * n,
                   decoder_arbitrary_ende_attn=(-1,) * n)


def _array(t: Tensor) -> Any:
    return t.detach().float().contiguous().numpy().copy()


def _parts_major(weight: Tensor, a: AttentionWeights, parts: int) -> Tensor:
    """Rows in CTranslate2's ``[part, head, dim]`` order (HAT's), from dynhat's ``[head, part, dim]`` if used."""
    if not a.heads_major or parts == 1:
        return weight
    return weight.reshape(a.heads, parts, a.head_dim, -1).transpose(0, 1).reshape(weight.shape)


def _set_linear(spec: Any, weight: Tensor, bias: Tensor | None, a: AttentionWeights | None = None,
                parts: int = 1) -> None:
    if a is not None:
        weight = _parts_major(weight, a, parts)
        bias = None if bias is None else _parts_major(bias.unsqueeze(1), a, parts).squeeze(1)
    spec.weight = _array(weight)
    if bias is not None:
        spec.bias = _array(bias)


def _set_norm(spec: Any, norm: NormWeights) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _set_attention(spec: Any, a: AttentionWeights, norm: NormWeights) -> None:
    if a.kv_w is None:
        _set_linear(spec.linear[0], a.in_w, a.in_b, a, 3)  # type: ignore[arg-type]
    else:
        _set_linear(spec.linear[0], a.in_w, a.in_b)  # type: ignore[arg-type]
        _set_linear(spec.linear[1], a.kv_w, a.kv_b, a, 2)  # type: ignore[arg-type]
    _set_linear(spec.linear[-1], a.out_w, a.out_b)  # type: ignore[arg-type]
    _set_norm(spec.layer_norm, norm)


def ct2_spec(w: SubTransformerWeights, tokens: Sequence[str]) -> Any:
    """The CTranslate2 ``TransformerSpec`` of a float32 weight record (see the module docstring)."""
    from dynhat.model.functional import LAYER_NORM_EPS

    check_expressible(w)
    _ct2()
    from ctranslate2.specs import common_spec, transformer_spec

    pre = w.decoder_norm is not None
    enc_attn, dec_attn = w.encoder[0].self_attn, w.decoder[0].self_attn
    relu = common_spec.Activation.RELU
    spec = transformer_spec.TransformerSpec(
        transformer_spec.TransformerEncoderSpec(len(w.encoder), enc_attn.heads, pre_norm=pre, activation=relu,
                                                head_dim=enc_attn.head_dim),
        transformer_spec.TransformerDecoderSpec(len(w.decoder), dec_attn.heads, pre_norm=pre, activation=relu,
                                                head_dim=dec_attn.head_dim))
    first = w.padding_idx + 1
    for stack, table, positions, norm in ((spec.encoder, w.encoder_embed, w.encoder_positions, w.encoder_norm),
                                          (spec.decoder, w.decoder_embed, w.decoder_positions, w.decoder_norm)):
        (stack.embeddings[0] if isinstance(stack.embeddings, list) else stack.embeddings).weight = _array(table)
        stack.scale_embeddings = True
        stack.position_encodings.encodings = _array(positions[first:])
        if norm is not None:
            _set_norm(stack.layer_norm, norm)
    for layer_spec, layer in zip(spec.encoder.layer, w.encoder, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_norm)
        _set_ffn(layer_spec.ffn, layer)
    for layer_spec, layer in zip(spec.decoder.layer, w.decoder, strict=True):
        _set_attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_norm)
        _set_attention(layer_spec.attention, layer.cross_attn, layer.cross_attn_norm)
        _set_ffn(layer_spec.ffn, layer)
    _set_linear(spec.decoder.projection, w.decoder_embed, None)
    spec.register_source_vocabulary(list(tokens))
    spec.register_target_vocabulary(list(tokens))
    spec.config.decoder_start_token = "</s>"
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = LAYER_NORM_EPS
    return spec


def _set_ffn(spec: Any, layer: Any) -> None:
    _set_linear(spec.linear_0, layer.ffn.fc1_w, layer.ffn.fc1_b)
    _set_linear(spec.linear_1, layer.ffn.fc2_w, layer.ffn.fc2_b)
    _set_norm(spec.layer_norm, layer.final_norm)


def vocabulary_tokens(vocab: TextVocabulary | None, size: int) -> list[str]:
    """Token strings for ids ``0..size-1``: a sentencepiece vocabulary's pieces, else ``<s> <pad> </s> <unk>``
    and the ids themselves."""
    sp = getattr(vocab, "sp", None)
    if sp is not None:
        if sp.get_piece_size() != size:
            raise DataError(f"vocabulary: {sp.get_piece_size()} pieces, the model has {size} embeddings")
        return [sp.id_to_piece(i) for i in range(size)]
    return [*SPECIAL_TOKENS, *(str(i) for i in range(len(SPECIAL_TOKENS), size))]


def export_ctranslate2(model: Seq2SeqModel, config: SubTransformerConfig | None, out_dir: str | Path,
                       vocab: TextVocabulary | None = None, quantization: str | None = None) -> Path:
    """Write ``config`` of ``model`` as a CTranslate2 model folder (replaced if present); returns its path."""
    import torch

    ct2 = _ct2()
    with torch.no_grad():
        w = model.weights(config)
        spec = ct2_spec(w, vocabulary_tokens(vocab, w.decoder_embed.shape[0]))

    class _Given(ct2.converters.Converter):  # type: ignore[misc,name-defined]
        def _load(self) -> Any:
            return spec

    return Path(_Given().convert(str(out_dir), quantization=quantization, force=True))


def export_points(model: Seq2SeqModel, vocab: TextVocabulary, points: Sequence[OperatingPoint], folder: str | Path,
                  quantization: str | None = None) -> list[Path]:
    """Each point's SubTransformer as ``folder / <SubTransformer id>`` (once per SubTransformer: decoding
    variants share it), what ``runtime.backends.CT2Backend`` loads. Every point is checked before anything is
    written, and a point CTranslate2 cannot express is refused naming the point and the field."""
    for p in points:
        try:
            check_expressible(model.weights(p.config))
        except DataError as err:
            raise DataError(f"point {p.id}: {err}") from None
    configs = {p.config.id: p.config for p in points}
    return [export_ctranslate2(model, c, Path(folder) / cid, vocab, quantization) for cid, c in configs.items()]


def load_model(path: str | Path, compute_type: str = "default", threads: int = 1) -> Any:
    """A ``ctranslate2.Translator`` of the model folder ``path`` on the CPU at ``threads`` intra-op threads (fixed
    for its life: CTranslate2 sets them when it loads the model)."""
    return _ct2().Translator(str(path), device="cpu", compute_type=compute_type, inter_threads=1,
                             intra_threads=threads)


class CT2Translator:
    """Sentences in, dynhat ``Hypothesis`` objects out, through a CTranslate2 model folder (one sentence a
    call: the per-sentence length limit is CTranslate2's per-batch ``max_decoding_length``).

    ``engines``: the folder's model already loaded (``load_model``), by thread count, shared (e.g. by a
    SubTransformer's decoding variants, which differ only in the beam) instead of loading the weights again;
    ``use_threads`` picks the copy a call runs on. Without it, the model is loaded at ``threads``."""

    def __init__(self, path: str | Path, vocab: TextVocabulary, beam: int = 4, lenpen: float = 0.6,
                 max_len_a: float = DEFAULT_MAX_LEN_A, max_len_b: float = DEFAULT_MAX_LEN_B,
                 compute_type: str = "default", threads: int = 1, engines: Mapping[int, Any] | None = None) -> None:
        self.engines = dict(engines or {threads: load_model(path, compute_type, threads)})
        self.engine = self.engines[min(self.engines)]
        self.vocab, self.beam, self.lenpen = vocab, beam, lenpen
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.tokens = vocabulary_tokens(vocab, len(vocab))
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def use_threads(self, threads: int) -> None:
        """Translate from now on with the copy loaded at ``threads`` threads."""
        if threads not in self.engines:
            raise DataError(f"threads: this CTranslate2 model was loaded for {sorted(self.engines)} threads, not "
                            f"{threads}")
        self.engine = self.engines[threads]

    def hypotheses(self, sentences: Sequence[str]) -> list[Hypothesis]:
        return self.hypotheses_of([self.vocab.encode(s) for s in sentences])

    def hypotheses_of(self, sources: Sequence[Sequence[int]]) -> list[Hypothesis]:
        """``hypotheses`` of sentences already encoded (subword ids without eos)."""
        out = []
        for ids in sources:
            if not ids:
                out.append(Hypothesis([], 0.0))
                continue
            limit = int(self.max_len_a * (len(ids) + 1) + self.max_len_b)
            (result,) = self.engine.translate_batch(
                [[self.tokens[i] for i in ids]], beam_size=self.beam, length_penalty=self.lenpen,
                max_decoding_length=limit, min_decoding_length=0, return_scores=True,
                suppress_sequences=[["<s>"], ["<pad>"]])
            out.append(Hypothesis([self.ids[t] for t in result.hypotheses[0]], float(result.scores[0])))
        return out

    def translate(self, sentences: Sequence[str]) -> list[str]:
        return [self.vocab.decode(h.tokens) for h in self.hypotheses(sentences)]

    def forced_seconds(self, ids: Sequence[int], steps: int) -> float:
        """Seconds to translate ``ids`` (eos appended) with exactly ``steps`` decoder steps at this beam: the
        latency protocol's loop run through CTranslate2."""
        pieces = [self.tokens[i] for i in ids]
        start = time.perf_counter()
        self.engine.translate_batch([pieces], beam_size=self.beam, min_decoding_length=steps,
                                    max_decoding_length=steps)
        return time.perf_counter() - start
