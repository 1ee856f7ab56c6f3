"""Translation and scoring: beam search, text-to-text translation, BLEU."""
