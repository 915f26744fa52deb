"""Fan-out: one function over many inputs on the workspace's Dask workers.

``burstlab.map(fn, items, gpu="H100")`` (``starmap``, ``for_each``, ``spawn_map``), ``@burstlab.function(gpu="H100")``
(with ``.remote``, ``.map``, ``.spawn``), ``@burstlab.cls`` with ``@burstlab.enter``/``@burstlab.exit`` for
per-worker state, ``burstlab.Retries`` for backoff, ``checkpoint=`` for resumable maps. See docs/fanout.md.
"""

from ._cls import Cls, cls, enter, exit
from .api import Call, Function, MapHandle, Retries, for_each, function, map, spawn_map, starmap

__all__ = ["Call", "Cls", "Function", "MapHandle", "Retries", "cls", "enter", "exit", "for_each", "function", "map",
           "spawn_map", "starmap"]
