"""Running the attribute pipeline past one machine.

`AttributeBatch` (images) and `ModalBatch` (tables, series, text) are engine-independent;
`run_ray` and `run_ray_modal` drive them on Ray Data. Importing this package
does not import Ray: only `run_ray` does, when called.
"""

from .batch import AttributeBatch
from .modal import ModalBatch, run_ray_modal
from .ray_engine import Cluster, parse_actors, run_ray

__all__ = ["AttributeBatch", "Cluster", "ModalBatch", "parse_actors", "run_ray", "run_ray_modal"]
