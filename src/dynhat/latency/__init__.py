"""Step 4 of the pipeline: latency measurement on the device, latency datasets and predictors.

``features`` (HAT's 10 features, per-layer features), ``table`` (HAT's latency CSV layout, the 80/10/10 split),
``predictor`` (HAT's MLP and dynhat's ensemble) and ``measure`` (timing a model on this machine).
"""
