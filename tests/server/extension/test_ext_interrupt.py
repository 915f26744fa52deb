"""POST sandboxes/{id}/interrupt: the running cell stops with KeyboardInterrupt, the sandbox keeps its state."""

import asyncio
import os
import time

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


async def test_interrupt_stops_the_running_cell_and_keeps_state(api):
    code, sb = await api("POST", "sandboxes", body={"timeout": 60})
    assert code == 201, sb
    try:
        assert (await api("POST", "sandboxes", sb["id"], "execute", body={"code": "x = 41"}))[0] == 200
        run = asyncio.ensure_future(api("POST", "sandboxes", sb["id"], "execute",
                                        body={"code": "import time\ntime.sleep(50)"}))
        await asyncio.sleep(1.0)
        assert not run.done()
        t0 = time.monotonic()
        code, after = await api("POST", "sandboxes", sb["id"], "interrupt")
        assert code == 200 and after["state"] == "running", after
        code, ex = await asyncio.wait_for(run, 10)
        assert time.monotonic() - t0 < 5
        assert code == 200 and ex["error"]["ename"] == "KeyboardInterrupt", ex
        code, ex = await api("POST", "sandboxes", sb["id"], "execute", body={"code": "x + 1"})
        assert ex["outputs"][-1]["data"]["text/plain"] == "42"  # the kernel and its state are kept
        code, idle = await api("POST", "sandboxes", sb["id"], "interrupt")  # nothing running: harmless
        assert code == 200
        code, err = await api("POST", "sandboxes", "sb-nosuch", "interrupt")
        assert code == 404
    finally:
        await api("DELETE", "sandboxes", sb["id"])
