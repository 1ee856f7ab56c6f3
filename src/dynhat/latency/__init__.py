"""Step 4 of the pipeline: this machine's latency datasets and the predictors fitted on them.

``collect`` (measuring a dataset, drift-probed and resumable), ``dataset`` (collections read back, drift-corrected),
``features`` (HAT's 10 features, per-layer features), ``table`` (HAT's latency CSV layout, the 80/10/10 split),
``predictor`` (the predictors' interface and file), ``hat_predictor`` (HAT's MLP) and ``ensemble`` (dynhat's).
The measurement protocol itself is ``dynhat.inference.measure``: the runtime's calibration uses it too.
"""
