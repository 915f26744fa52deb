"""What every client of one cluster can see: the GPU sessions and maps running on it, kept on the scheduler.

The Jupyter server, each notebook kernel it started and each agent have their own Dask client on the
same scheduler. Each publishes the sessions and maps it holds into a small table on the scheduler, so
that any of them (the lab's panel, above all) can list everything and ask for something to stop. A
record lives only as long as what it describes: a session's record is dropped when its lease task is
gone (stopped, or its notebook died), a map's when its owner's client has gone or an hour after it ended.

A stop asked by another client is recorded with its reason, then carried out by cancelling the
session's lease tasks (for a map, the owner sees the request at its next progress tick and cancels).
"""

from __future__ import annotations

import time
from typing import Any

_ATTR = "_burstlab_registry"
MAP_KEEP_S = 3600.0  # ended maps stay listed this long
STOP_KEEP_S = 300.0  # a stop's reason outlives its record, for the holder to read after its lease is gone
ENDED_KEEP_S = 300.0  # an ended session (its holder published "ended", "ended_by", "why") stays listed this long


def _table(dask_scheduler) -> dict:
    table = getattr(dask_scheduler, _ATTR, None)
    if table is None:
        table = {"session": {}, "map": {}, "stop": {}}
        setattr(dask_scheduler, _ATTR, table)
    return table


def _alive(dask_scheduler, kind: str, record: dict) -> bool:
    if kind == "session":
        if record.get("ended"):  # listed a while after it ended, saying who or what ended it (the lab's news)
            return time.time() - record["ended"] < ENDED_KEEP_S
        ts = dask_scheduler.tasks.get(record.get("lease_key"))
        return ts is not None and bool(ts.who_wants)
    if record.get("state") == "running":
        return record.get("owner") in dask_scheduler.clients
    return time.time() - record.get("updated", 0) < MAP_KEEP_S


def _publish(kind: str, id: str, record: dict, dask_scheduler=None) -> str:
    """Runs on the scheduler: store (or update) a record. Returns a stop request's reason, or ""."""
    table = _table(dask_scheduler)
    record = {**table[kind].get(id, {}), **record, "updated": time.time()}
    table[kind][id] = record
    return table["stop"].get((kind, id), ("", 0))[0]


def _retract(kind: str, id: str, dask_scheduler=None) -> None:
    table = _table(dask_scheduler)
    table[kind].pop(id, None)
    table["stop"].pop((kind, id), None)


def _listing(kind: str, dask_scheduler=None) -> list[dict]:
    """Runs on the scheduler: the live records of ``kind``; dead ones are dropped on the way."""
    table = _table(dask_scheduler)
    out = []
    for id, record in list(table[kind].items()):
        if _alive(dask_scheduler, kind, record):
            out.append(dict(record))
        elif kind == "map" and record.get("state") == "running":
            record["state"] = "lost"  # its notebook went away mid-map; keep it listed a while
            out.append(dict(record))
        else:
            del table[kind][id]
    now = time.time()
    for key, (_, at) in list(table["stop"].items()):
        if now - at > STOP_KEEP_S:
            del table["stop"][key]
    return out


def _request_stop(kind: str, id: str, reason: str, dask_scheduler=None) -> bool:
    """Runs on the scheduler: note why, and for a session cancel its lease tasks at once."""
    table = _table(dask_scheduler)
    record = table[kind].get(id)
    if record is None or record.get("ended") or not _alive(dask_scheduler, kind, record):
        return False
    table["stop"][(kind, id)] = (reason, time.time())
    if kind == "session":
        keys = [k for k in record.get("lease_keys", []) if k in dask_scheduler.tasks]
        owners = {cs.client_key for k in keys for cs in dask_scheduler.tasks[k].who_wants}
        if owners:
            dask_scheduler.stimulus_cancel(keys, client=next(iter(owners)), force=True,
                                           reason="burstlab-stop", msg=reason)
    return True


def _stop_reason(kind: str, id: str, dask_scheduler=None) -> str:
    return _table(dask_scheduler)["stop"].get((kind, id), ("", 0))[0]


def publish(client, kind: str, id: str, record: dict[str, Any]) -> str:
    """Publish or update a record; returns the reason if another client asked for it to stop."""
    return client.run_on_scheduler(_publish, kind, id, record)


def retract(client, kind: str, id: str) -> None:
    client.run_on_scheduler(_retract, kind, id)


def listing(client, kind: str) -> list[dict]:
    return client.run_on_scheduler(_listing, kind)


def request_stop(client, kind: str, id: str, reason: str) -> bool:
    """Ask whoever holds session/map ``id`` to stop; False if no such live record."""
    return client.run_on_scheduler(_request_stop, kind, id, reason)


def stop_reason(client, kind: str, id: str) -> str:
    return client.run_on_scheduler(_stop_reason, kind, id)


__all__ = ["listing", "publish", "request_stop", "retract", "stop_reason"]
