"""Running the attribute pipeline past one machine.

`AttributeBatch` is engine-independent; `run_ray` drives it on Ray Data. Importing this package
does not import Ray: only `run_ray` does, when called.
"""

from .batch import AttributeBatch
from .ray_engine import Cluster, parse_actors, run_ray

__all__ = ["AttributeBatch", "Cluster", "parse_actors", "run_ray"]
