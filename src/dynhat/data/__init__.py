"""Step 3 of the pipeline (data): corpora, the Multi30k fetcher, subword vocabulary and token batching."""
