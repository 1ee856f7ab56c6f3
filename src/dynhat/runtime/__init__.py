"""Step 6 of the pipeline: serve translations under a latency budget by switching operating points at run time.

``dynamic`` (the translator), ``costs`` (its cost model, calibrated once), ``controller`` (policies), ``monitor``
(free cores, slowdown), ``service`` (HTTP);
the scenario experiment: ``scenario`` (phases YAML), ``load`` (busy processes), ``experiment``, ``report``.
"""

from dynhat.runtime.controller import Candidate, FixedPolicy, GreedyPolicy, HysteresisPolicy, Policy
from dynhat.runtime.costs import CostModel, PointCost, calibrate
from dynhat.runtime.dynamic import DynamicTranslator, TranslationResult
from dynhat.runtime.monitor import ResourceMonitor, Resources, SlowdownTracker

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
