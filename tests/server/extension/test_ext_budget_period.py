"""Budgets over REST take a period, and a budget set below what is spent says what it stopped."""

import asyncio
import time


async def test_a_budget_with_a_period_and_what_a_low_one_stops(api):
    code, budget = await api("PUT", "budgets", "notebook", "period.ipynb", body={"limit_usd": 5, "period": "month"})
    assert code == 200, budget
    assert (budget["period"], budget["stopped"], budget["state"]) == ("month", [], "ok")
    code, listing = await api("GET", "budgets")
    assert [b["period"] for b in listing["budgets"] if b["name"] == "period.ipynb"] == ["month"]
    code, err = await api("PUT", "budgets", "notebook", "period.ipynb", body={"limit_usd": 5, "period": "year"})
    assert code == 400 and "period" in err["message"], err
    code, session = await api("POST", "sessions", body={"gpu": "A100", "notebook": "low.ipynb"})
    assert code == 201, session
    try:
        code, low = await api("PUT", "budgets", "notebook", "low.ipynb", body={"limit_usd": 0.000001})
        assert code == 200, low
        assert low["state"] == "exceeded" and len(low["stopped"]) == 1 and "A100" in low["stopped"][0], low
        deadline = time.monotonic() + 20  # the budget's own stop releases it
        while time.monotonic() < deadline:
            code, listing = await api("GET", "sessions")
            if session["id"] not in [s["id"] for s in listing["sessions"]]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the session a spent budget stopped is still listed after 20 s")
    finally:
        await api("DELETE", "budgets", "notebook", "low.ipynb")
        await api("DELETE", "budgets", "notebook", "period.ipynb")
