"""Budgets over REST: set, list, remove; another user's budget is not yours to touch."""


async def test_budget_lifecycle(api):
    code, ws = await api("GET", "workspace")
    me = ws["user"]
    code, data = await api("GET", "budgets")
    assert code == 200 and data == {"budgets": []}
    code, b = await api("PUT", "budgets", "user", me, body={"limit_usd": 5, "soft_fraction": 0.5})
    assert code == 200, b
    assert (b["scope"], b["name"], b["limit_microusd"], b["soft_fraction"], b["state"]) == ("user", me, 5_000_000, 0.5, "ok")
    code, nb = await api("PUT", "budgets", "notebook", "agent 1", body={"limit_usd": 0.25})
    assert code == 200 and nb["limit_microusd"] == 250_000 and nb["soft_fraction"] == 0.8
    code, data = await api("GET", "budgets")
    assert {(x["scope"], x["name"]) for x in data["budgets"]} == {("user", me), ("notebook", "agent 1")}
    code, gone = await api("DELETE", "budgets", "notebook", "agent 1")
    assert code == 200 and gone["name"] == "agent 1"
    code, err = await api("DELETE", "budgets", "notebook", "agent 1")
    assert code == 404
    await api("DELETE", "budgets", "user", me)


async def test_budget_errors(api):
    code, err = await api("PUT", "budgets", "user", "somebody-else", body={"limit_usd": 5})
    assert code == 404 and "somebody-else" in err["message"]
    code, err = await api("DELETE", "budgets", "user", "somebody-else")
    assert code == 404
    for body, needle in (({}, "limit_usd"), ({"limit_usd": 0}, "limit_usd"), ({"limit_usd": "5"}, "limit_usd"),
                         ({"limit_usd": 5, "soft_fraction": 2}, "soft_fraction"), ({"limit_usd": 5, "x": 1}, "x")):
        code, err = await api("PUT", "budgets", "notebook", "nb", body=body)
        assert code == 400 and needle in err["message"], (body, err)
    code, err = await api("PUT", "budgets", "team", "nb", body={"limit_usd": 5})
    assert code == 404 and "scope" in err["message"]
    code, err = await api("GET", "no", "such", "path")
    assert code == 404 and "openapi.json" in err["message"]
    assert (await api("GET", "budgets"))[1] == {"budgets": []}


async def test_spent_budget_refuses_with_402(api):
    code, ws = await api("GET", "workspace")
    code, s = await api("POST", "sessions", body={"gpu": "A100", "notebook": "spender"})
    assert code == 201, s
    await api("DELETE", "sessions", s["id"])  # at least 1 s billed
    code, b = await api("PUT", "budgets", "notebook", "spender", body={"limit_usd": 0.000001})
    assert code == 200 and b["state"] == "exceeded", b
    code, err = await api("POST", "sessions", body={"gpu": "A100", "notebook": "spender"})
    assert code == 402, err
    assert "spender" in err["message"]
    code, listing = await api("GET", "sessions")
    assert listing["sessions"] == []
    code, err = await api("POST", "sandboxes", body={"notebook": "spender"})  # sandboxes are refused too
    assert code == 402 and "sandbox" in err["message"], err
    assert (await api("GET", "sandboxes"))[1] == {"sandboxes": []}
    await api("DELETE", "budgets", "notebook", "spender")
