"""Step 4 of the pipeline: latency measurement on the device, latency datasets and predictors."""
