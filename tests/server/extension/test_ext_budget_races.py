"""Budget requests answer at once while the cluster is slow to answer.

A budget is ledger work only, but the REST requests that ask Dask (``GET maps``, ``GET sessions``, ``GET hosts``,
``DELETE maps/{id}``, which the lab's panel sends every few seconds) wait as long as the scheduler does. Here the
scheduler is made to stall (a function run on it that sleeps, as when it is busy with a worker that went away)
while the panel's requests pile up; setting, listing and removing budgets must still answer within seconds.
"""

import asyncio
import threading
import time

STALL_S = 6.0  # how long the scheduler stalls; every budget request must answer well before it ends


def _stall(seconds, dask_scheduler=None):
    import time

    time.sleep(seconds)  # blocks the scheduler's event loop: every Dask call waits meanwhile
    return seconds


async def _timed(api, *args, **kwargs):
    t0 = time.monotonic()
    out = await api(*args, **kwargs)
    return time.monotonic() - t0, out


async def test_budget_requests_do_not_wait_for_a_stalled_cluster(api, jp_serverapp):
    manager = jp_serverapp.web_app.settings["burstlab_manager"]
    code, ws = await api("GET", "workspace")
    me = ws["user"]
    code, _ = await api("POST", "sessions", body={"gpu": "A100", "notebook": "racer"})  # starts the cluster
    assert code == 201
    await asyncio.sleep(1.1)  # at least a billed second: a budget of a microdollar is spent
    client = await asyncio.to_thread(lambda: manager.ws.client)
    stalled = threading.Thread(target=client.run_on_scheduler, args=(_stall, STALL_S), daemon=True)
    t0 = time.monotonic()
    stalled.start()
    await asyncio.sleep(0.3)
    # The panel of a few lab tabs: each Dask-facing request holds a thread while the scheduler is stalled.
    panel = [asyncio.ensure_future(call(me)) for _ in range(8)
             for call in (manager.list_maps, manager.list_sessions, manager.hosts)]
    await asyncio.sleep(0.3)
    try:
        timings = {}
        timings["PUT"], (code, b) = await _timed(api, "PUT", "budgets", "notebook", "racer", body={"limit_usd": 5})
        assert code == 200 and b["state"] == "ok", b
        # Below what is spent: it stops the notebook's session (the watcher does, in its own thread).
        timings["PUT below"], (code, b) = await _timed(api, "PUT", "budgets", "notebook", "racer",
                                                       body={"limit_usd": 0.000001})
        assert code == 200 and b["state"] == "exceeded", b
        timings["GET"], (code, listing) = await _timed(api, "GET", "budgets")
        assert code == 200 and [x["name"] for x in listing["budgets"]] == ["racer"]
        timings["DELETE"], (code, b) = await _timed(api, "DELETE", "budgets", "notebook", "racer")
        assert code == 200 and b["name"] == "racer"
        waited = time.monotonic() - t0
        assert waited < STALL_S - 2, (f"the budget requests waited for the stalled scheduler: {timings}", waited)
        assert all(t < 2.0 for t in timings.values()), timings
        print("budget request timings (s):", {k: round(v, 3) for k, v in timings.items()})
    finally:
        await asyncio.gather(*panel, return_exceptions=True)
        await asyncio.to_thread(stalled.join, STALL_S + 10)
        await api("DELETE", "budgets", "notebook", "racer")
    code, sessions = await api("GET", "sessions")  # the watcher stopped the over-budget session meanwhile
    assert code == 200
