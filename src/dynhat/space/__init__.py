"""Step 1 of the pipeline: the design space and the SubTransformer configurations in it."""

from dynhat.space.config import HAT_KEYS, SubTransformerConfig
from dynhat.space.sampling import (
    crossover,
    from_gene,
    ladder,
    largest,
    middle,
    mutate,
    resolve_config,
    sample,
    smallest,
    to_gene,
)
from dynhat.space.space import ARBITRARY_ATTENDED, SHIPPED_SPACES, DesignSpace, load_space

__all__ = [
    "ARBITRARY_ATTENDED",
    "HAT_KEYS",
    "SHIPPED_SPACES",
    "DesignSpace",
    "SubTransformerConfig",
    "crossover",
    "from_gene",
    "ladder",
    "largest",
    "load_space",
    "middle",
    "mutate",
    "resolve_config",
    "sample",
    "smallest",
    "to_gene",
]
