"""Step 3 of the pipeline: training the SuperTransformer (or one fixed SubTransformer) on parallel data."""
