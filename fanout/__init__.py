"""Fan-out: one function over many inputs on the workspace's Dask workers.

``burstlab.map(fn, items, gpu="H100")`` and ``@burstlab.function(gpu="H100")`` (with ``.remote``,
``.map``, ``.spawn``). See docs/fanout.md.
"""

from .api import Call, Function, function, map

__all__ = ["Call", "Function", "function", "map"]
