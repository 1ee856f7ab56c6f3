"""Translation and scoring: beam search, text-to-text translation, BLEU."""

from dynhat.translate.bleu import BleuScores as BleuScores
from dynhat.translate.bleu import score as score
