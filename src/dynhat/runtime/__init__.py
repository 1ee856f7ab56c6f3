"""Step 6 of the pipeline: serve translations under a latency budget by switching operating points at run time.

``dynamic`` (the translator), ``backends`` (what runs a point: dynhat float32/int8, CTranslate2), ``costs`` (its
cost model, calibrated once), ``controller`` (policies), ``monitor`` (free cores, slowdown), ``service`` (HTTP);
the scenario experiment: ``scenario`` (phases YAML), ``load`` (busy processes), ``experiment``, ``report``.
Names are imported on first use: a service over an engine folder imports no torch.
"""

from dynhat.lazy import lazy_getattr

__all__ = [
    "Candidate",
    "CostModel",
    "DynamicTranslator",
    "FixedPolicy",
    "GreedyPolicy",
    "HysteresisPolicy",
    "PointCost",
    "Policy",
    "ResourceMonitor",
    "Resources",
    "SlowdownTracker",
    "TranslationResult",
    "calibrate",
]

__getattr__ = lazy_getattr(__name__, {
    "controller": ("Candidate", "FixedPolicy", "GreedyPolicy", "HysteresisPolicy", "Policy"),
    "costs": ("CostModel", "PointCost", "calibrate"),
    "dynamic": ("DynamicTranslator", "TranslationResult"),
    "monitor": ("ResourceMonitor", "Resources", "SlowdownTracker"),
})
