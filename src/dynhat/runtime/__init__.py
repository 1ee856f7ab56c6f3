"""Step 4 of the method: serve translations under a latency budget by switching operating points at run time."""

from dynhat.runtime.controller import Candidate, GreedyPolicy, HysteresisPolicy, Policy
from dynhat.runtime.dynamic import DynamicTranslator, PointCost, TranslationResult
from dynhat.runtime.monitor import ResourceMonitor, Resources, SlowdownTracker

__all__ = [
    "Candidate",
    "DynamicTranslator",
    "GreedyPolicy",
    "HysteresisPolicy",
    "PointCost",
    "Policy",
    "ResourceMonitor",
    "Resources",
    "SlowdownTracker",
    "TranslationResult",
]
