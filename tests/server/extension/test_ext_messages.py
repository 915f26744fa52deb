"""What a new user reads over REST: burstlab's messages arrive word for word (tornado must not double their %)."""


async def test_capacity_and_impossible_count_messages_are_verbatim(api):
    code, held = await api("POST", "sessions", body={"gpu": "A100"})
    assert code == 201, (code, held)
    try:
        code, err = await api("POST", "sessions", body={"gpu": "A100"})
        assert code == 409
        assert isinstance(err, dict), err
        assert "Wait for one with `%%gpu A100 --wait 60`, release one with `%gpu stop A100`" in err["message"], err
        assert "%%%%" not in err["message"]
        code, err = await api("POST", "sessions", body={"gpu": "H100:9", "wait": 5})
        assert code == 400
        assert err["message"] == (
            "H100:9 can never be held here: no host has more than 2 H100, and a session holds its GPUs on one host, "
            "so waiting cannot help. Ask for `%%gpu H100:2` or fewer, or add a host that has more.")
    finally:
        await api("DELETE", "sessions", held["id"])
