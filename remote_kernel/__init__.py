"""GPU sessions on remote kernels, placed by Dask: the leaf of burstlab that holds GPUs.

- ``cluster`` and ``adaptive``: the embedded Dask cluster (one worker per GPU, one CPU worker) that scales to
  zero, and the pure ``decide()`` behind it; ``worker`` serves a host's GPUs to an existing cluster; ``_tls``
  its mutual TLS.
- ``lease``: GPUs held by tasks pinned to their workers (``acquire``, ``Lease``), with the capacity messages.
- ``pool`` and ``_kernel_side``: warm kernels on each GPU worker, and the comm that moves variables.
- ``session`` and ``client``: ``GpuSession`` (one lease, one remote kernel) and the Jupyter-protocol clients
  that execute on it; ``_liveness`` notices a GPU host that went away.
- ``registry``: the sessions and maps every client of one cluster sees, kept on the scheduler.
- ``provisioner``, ``_kernelspecs``, ``_held``: a notebook kernel that is itself a leased GPU kernel.
- ``envsync``: the notebook's environment follows its code to the GPU host.

It may import only the core (``burstlab.errors``, ``wire``, ``gpus``, ``_sync``); the workspace above owns the
sessions, bills them and releases them (docs/architecture.md).
"""
