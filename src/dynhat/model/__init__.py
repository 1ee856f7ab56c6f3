"""Step 2 of the pipeline: the elastic SuperTransformer, the dense models extracted from it, and the serving copies
of its operating points."""

from dynhat.model.dense import DenseTransformer, extract
from dynhat.model.functional import EncoderOut
from dynhat.model.incremental import DecoderState
from dynhat.model.seq2seq import Seq2SeqModel
from dynhat.model.serving import ServingModel
from dynhat.model.supertransformer import ModelSettings, SuperTransformer

__all__ = [
    "DecoderState",
    "DenseTransformer",
    "EncoderOut",
    "ModelSettings",
    "Seq2SeqModel",
    "ServingModel",
    "SuperTransformer",
    "extract",
]
