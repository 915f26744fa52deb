"""Helpers shared by the fleet's conftest and tests (a plain module: test files cannot import a conftest)."""

from __future__ import annotations

from burstlab.examples.fleet import wait_for


def worker_names(client) -> dict[str, str]:
    """Worker name -> address, as the scheduler sees them now."""
    info = client.run_on_scheduler(lambda dask_scheduler: {str(ws.name): ws.address
                                                           for ws in dask_scheduler.workers.values()})
    return info


def wait_workers(client, hosts: set[str], timeout: float = 60.0) -> dict[str, str]:
    """Wait until the scheduler has a burstlab worker on each of ``hosts`` (labels)."""
    def check():
        names = worker_names(client)
        have = {n.split("/")[1] for n in names if n.startswith("burstlab/")}
        return names if hosts <= have else None
    return wait_for(f"burstlab workers on {sorted(hosts)}", check, timeout, interval=0.1)


__all__ = ["wait_workers", "worker_names"]
