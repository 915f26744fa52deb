"""Imported first by the embedded cluster's forkserver: its worker processes ignore SIGINT.

Jupyter interrupts a kernel by sending SIGINT to the kernel's whole process group, and the embedded
cluster's worker processes (forked from the forkserver, which the notebook's kernel started) are in
that group. Without this, Ctrl-C on a `burstlab.map` cell would kill every Dask worker with it. The
forkserver hands its children the SIGINT disposition it had before its own set-up, which is this one.
The map's own cancellation (in the kernel) is what stops the work.
"""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
