"""The bounds at the API's edge, without a service: request bodies (jupyter_ext/bounds.py), responses, and the
GPU session's output collector (remote_kernel/client.py) fed the messages a flooding kernel sends."""

from __future__ import annotations

import json

import pytest

from burstlab.jupyter_ext.auth import TokenTable, hashed
from burstlab.jupyter_ext.bounds import MAX_DEPTH, OutputBudget, bound_execution, parse_json, size_of
from burstlab.jupyter_ext.errors import BadRequest
from burstlab.jupyter_ext.openapi import validate
from burstlab.errors import ConfigError
from burstlab.remote_kernel.client import _Collector

MIB = 2**20


@pytest.mark.parametrize("text, needle", [
    ('{"gpu": "H100", "wait": NaN}', "wait: NaN is not a finite number"),
    ('{"gpu": "H100", "wait": -Infinity}', "wait: -Infinity is not a finite number"),
    ('{"gpu": "H100", "wait": 1e999}', "wait: 1e999 is not a finite number"),
    ('{"gpu": "H100", "wait": 301}', "wait: 301 is greater than the maximum of 300"),
])
def test_numbers_are_finite_and_bounded(text, needle):
    with pytest.raises(BadRequest) as info:
        validate("SessionCreate", parse_json(text.encode()))
    assert needle in info.value.message


def test_shapes_that_are_400():
    for raw, needle in ((b"[" * 100_000 + b"]" * 100_000, "nests too deeply"),
                        (b"[" * (MAX_DEPTH + 2) + b"]" * (MAX_DEPTH + 2), "nested deeper"),
                        (b"[" + b"0," * 20_000 + b"0]", "values"),
                        (b'{"a": ["\\ud800"]}', "a/0: holds a lone surrogate"),
                        (b'{"\\ud800": 1}', "(a key): holds a lone surrogate"),
                        (b'"\xff"', "not UTF-8"), (b"{", "not valid JSON"), (b"1" * 5000, "not valid JSON")):
        with pytest.raises(BadRequest) as info:
            parse_json(raw)
        assert needle in info.value.message, (raw[:20], info.value.message)
        info.value.message.encode("utf-8")  # the message is text itself
    assert parse_json(b'{"n": "\\ud83d\\ude00", "x": [[1.5]]}') == {"n": "\U0001F600", "x": [[1.5]]}


def test_bound_execution_keeps_what_fits_and_says_what_went():
    outputs = [{"kind": "stream", "name": "stdout", "text": "a" * 1000, "data": {}, "metadata": {}},
               {"kind": "display_data", "name": "", "text": "", "data": {"text/plain": "x"},
                "metadata": {"p": "A" * (3 * MIB)}},
               {"kind": "stream", "name": "stdout", "text": "b" * (2 * MIB), "data": {}, "metadata": {}}]
    ex = {"outputs": outputs, "error": {"ename": "E", "evalue": "v" * MIB, "traceback": ["t"] * 1000},
          "execution_count": 1, "duration_s": 0.1}
    out = bound_execution(ex, MIB)
    assert size_of(out["outputs"]) <= MIB + 1024
    assert out["outputs"][0] == outputs[0] and "limit" in out["outputs"][-1]["text"]
    assert len(out["error"]["evalue"]) < 70_000 and len(out["error"]["traceback"]) == 200
    small = bound_execution({**ex, "error": None, "outputs": outputs[:1]}, MIB)
    assert small["outputs"] == outputs[:1]
    budget = OutputBudget(10_000)
    assert budget.take(outputs[0]) == outputs[0]
    cut = budget.take({**outputs[0], "text": "c" * 20_000})
    assert cut is not None and len(cut["text"]) < 20_000 and budget.used <= budget.limit
    assert budget.take(outputs[0]) is None and budget.dropped > 0


def _msg(kind, content, parent="p"):
    return {"header": {"msg_type": kind}, "parent_header": {"msg_id": parent}, "content": content}


def test_session_collector_counts_metadata_and_non_str_values():
    seen = []
    c = _Collector(seen.append, limit=4 * MIB)
    for _ in range(60):  # publish_display_data({'text/plain': 'x'}, metadata={'p': 'A' * 3 * 2**20})
        c.feed(_msg("display_data", {"data": {"text/plain": "x"}, "metadata": {"p": "A" * (3 * MIB)}}))
    for _ in range(10):  # a non-str mime value counts as its JSON
        c.feed(_msg("display_data", {"data": {"application/json": {"k": ["v" * MIB]}}, "metadata": {}}))
    for _ in range(10):  # and so does transient
        c.feed(_msg("display_data", {"data": {}, "metadata": {}, "transient": {"display_id": "d" * MIB}}))
    c.feed(_msg("status", {"execution_state": "idle"}))
    ex = c.finish(None)
    kept = sum(size_of(o.to_json()) for o in ex.outputs)
    assert kept <= 4 * MIB + 4096, kept
    assert ex.outputs[-1].name == "stderr" and "output limit" in ex.outputs[-1].text
    assert [o.text for o in ex.outputs].count(ex.outputs[-1].text) == 1  # one marker
    assert seen == list(ex.outputs)


def test_tokens_file_plain_must_be_private(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"t" * 20: "alice"}))
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        TokenTable().load_file(str(path))
    path.chmod(0o600)
    table = TokenTable()
    table.load_file(str(path))
    assert table.lookup("t" * 20).user == "alice"
    path.write_text(json.dumps({hashed("u" * 20): "bob"}))
    path.chmod(0o644)  # digests only: no secret in it
    table = TokenTable()
    table.load_file(str(path))
    assert table.lookup("u" * 20) == ("bob", True, False) and table.lookup(hashed("u" * 20)) is None
