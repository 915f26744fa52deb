"""Imported first by the embedded cluster's forkserver: its worker processes ignore SIGINT and never
re-run the user's ``__main__``.

Jupyter interrupts a kernel by sending SIGINT to the kernel's whole process group, and the embedded
cluster's worker processes (forked from the forkserver, which the notebook's kernel started) are in
that group. Without this, Ctrl-C on a `burstlab.map` cell would kill every Dask worker with it. The
forkserver hands its children the SIGINT disposition it had before its own set-up, which is this one.
The map's own cancellation (in the kernel) is what stops the work.

A process forked from the forkserver first runs ``multiprocessing.spawn.prepare`` with what the parent
sent, which re-imports the parent's ``__main__`` (as ``__mp_main__``) the way ``spawn`` does. For a
script with a top-level ``burstlab.map(...)`` and no ``if __name__ == "__main__":`` guard (or
``ipython script.py``), every worker would run the script again and die in multiprocessing's
bootstrapping check. Dask workers never need the user's ``__main__``: functions defined there travel by
value (cloudpickle). So, in this server process only (never in the user's), ``prepare`` drops the
instruction to import it; the rest (``sys.path``, working directory, authkey) is applied as before.
"""

import multiprocessing.spawn as _spawn
import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)

_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
_prepare = _spawn.prepare


def _prepare_without_main(data):
    return _prepare({k: v for k, v in data.items() if k not in _MAIN_KEYS})


_prepare_without_main.__wrapped__ = _prepare
_spawn.prepare = _prepare_without_main
