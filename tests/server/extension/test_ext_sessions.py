"""GPU sessions over REST (declared GPUs: H100:2, A100:1), maps and usage."""

import time

import pytest


async def test_session_lifecycle(api):
    code, s = await api("POST", "sessions", body={"gpu": "H100", "notebook": "agent-1"})
    assert code == 201, s
    assert (s["gpu_type"], s["count"], s["declared"], s["state"], s["origin"], s["notebook"]) == \
        ("H100", 1, True, "running", "server", "agent-1")
    code, listing = await api("GET", "sessions")
    assert [x["id"] for x in listing["sessions"]] == [s["id"]]
    code, one = await api("GET", "sessions", s["id"])
    assert code == 200 and one["spec"] == "H100" and one["user"] == s["user"]
    code, ex = await api("POST", "sessions", s["id"], "execute",
                         body={"code": "import os\nprint(os.environ['BURSTLAB_GPU_TYPE'])\n6 * 7"})
    assert code == 200, ex
    assert ex["outputs"][0]["text"] == "H100\n" and ex["outputs"][-1]["data"]["text/plain"] == "42"
    code, ex = await api("POST", "sessions", s["id"], "execute", body={"code": "import time; time.sleep(30)", "timeout": 0.5})
    assert code == 200 and ex["error"]["ename"] == "KeyboardInterrupt"
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["H100"] == 1
    code, stopped = await api("DELETE", "sessions", s["id"])
    assert code == 200 and stopped["state"] == "stopped" and stopped["billed_s"] >= 1
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["H100"] == 2  # free when DELETE returned
    code, err = await api("GET", "sessions", s["id"])
    assert code == 404
    code, usage = await api("GET", "usage", params={"kind": "session", "notebook": "agent-1"})
    assert [r["resource"] for r in usage["records"]] == ["H100"]
    assert usage["records"][0]["stop_ns"] is not None
    assert usage["totals"]["by_notebook"] == {"agent-1": usage["totals"]["cost_microusd"]}


async def test_no_capacity_is_409_and_bad_specs_are_400(api):
    code, a = await api("POST", "sessions", body={"gpu": "A100"})
    assert code == 201, a
    code, err = await api("POST", "sessions", body={"gpu": "A100"})
    assert code == 409 and "A100" in err["message"]
    for body, needle in (({"gpu": "H200"}, "H200"), ({"gpu": "H100:9"}, "H100"), ({}, "gpu"), ({"gpu": 5}, "gpu"),
                         ({"gpu": "H100", "wait": -1}, "wait"), ({"gpu": "H100", "extra": 1}, "extra"),
                         ({"gpu": []}, "gpu")):
        code, err = await api("POST", "sessions", body=body)
        assert code in (400, 409) and needle in err["message"], (body, err)
        if body.get("gpu") != "H100:9":
            assert code == 400, (body, err)
    code, listing = await api("GET", "sessions")
    assert [x["id"] for x in listing["sessions"]] == [a["id"]]  # nothing half-created
    await api("DELETE", "sessions", a["id"])


async def test_unknown_ids_are_404(api):
    for method, parts, body in (("GET", ("sessions", "nope"), None), ("DELETE", ("sessions", "nope"), None),
                                ("POST", ("sessions", "nope", "execute"), {"code": "1"}),
                                ("DELETE", ("maps", "nope"), None)):
        code, err = await api(method, *parts, body=body)
        assert code == 404 and "nope" in err["message"], (method, parts, err)


async def test_maps_list(api):
    code, data = await api("GET", "maps")
    assert code == 200 and data == {"maps": []}


async def test_usage_filters_and_validation(api):
    code, sb = await api("POST", "sandboxes", body={"notebook": "usage-nb"})
    assert code == 201
    await api("DELETE", "sandboxes", sb["id"])
    code, usage = await api("GET", "usage", params={"notebook": "usage-nb"})
    assert code == 200
    (record,) = usage["records"]
    assert record["kind"] == "sandbox" and record["billed_s"] >= 1 and record["stop_ns"] is not None
    assert usage["totals"]["by_kind"] == {"sandbox": record["cost_microusd"]}
    day = time.strftime("%Y-%m-%d", time.gmtime(record["start_ns"] / 1e9))
    assert usage["totals"]["by_day"] == {day: record["cost_microusd"]}
    code, later = await api("GET", "usage", params={"notebook": "usage-nb", "since": str(time.time() + 3600)})
    assert later["records"] == []
    code, until = await api("GET", "usage", params={"notebook": "usage-nb", "until": str(time.time() + 5)})
    assert len(until["records"]) == 1
    for bad in ("yesterday", "nan", "1e300", "-5", "60908895937.8"):
        code, err = await api("GET", "usage", params={"since": bad})
        assert code == 400 and "since" in err["message"]
