"""burstlab._collect: the one iopub collector of both kernel clients (GPU sessions and sandboxes)."""

from burstlab._collect import MAX_TRACEBACK_LINES, OutputCollector, limit_marker
from burstlab.wire import Output


def _stream(text, name="stdout"):
    return "stream", {"name": name, "text": text}


def test_every_output_kind_is_kept_in_order_and_stream_chunks_merge():
    seen = []
    c = OutputCollector(1 << 20, seen.append)
    c.feed("execute_input", {"execution_count": 7, "code": "x"})
    for msg in (_stream("a"), _stream("b"), _stream("e", "stderr"), _stream("c"),
                ("display_data", {"data": {"text/plain": "1"}, "metadata": {}, "transient": {"display_id": "d"}}),
                ("update_display_data", {"data": {"text/plain": "2"}, "metadata": {}, "transient": {"display_id": "d"}}),
                ("clear_output", {"wait": True}), _stream("x"), _stream("y"),
                ("execute_result", {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 7})):
        assert not c.feed(*msg)
    assert c.feed("status", {"execution_state": "idle"}) and c.idle
    ex = c.execution()
    assert [(o.kind, o.name, o.text) for o in ex.outputs] == [
        ("stream", "stdout", "ab"), ("stream", "stderr", "e"), ("stream", "stdout", "c"), ("display_data", "", ""),
        ("update_display_data", "", ""), ("clear_output", "", ""), ("stream", "stdout", "xy"),
        ("execute_result", "", "")]
    assert ex.outputs[4].metadata["transient"] == {"display_id": "d"} and ex.outputs[5].metadata == {"wait": True}
    assert [o.text for o in seen if o.kind == "stream"] == ["a", "b", "e", "c", "x", "y"]  # raw chunks, as they came
    assert ex.execution_count == 7 and ex.text == "42" and ex.error is None


def test_the_reply_gives_the_count_and_an_error_iopub_did_not_send_and_errors_are_bounded():
    c = OutputCollector(100)
    c.take_reply({"status": "error", "execution_count": 3, "ename": "E", "evalue": "v",
                  "traceback": ["t"] * (MAX_TRACEBACK_LINES + 50)})
    assert c.reply and c.execution_count == 3 and c.error.ename == "E"
    assert len(c.error.traceback) == MAX_TRACEBACK_LINES
    c.feed("error", {"ename": 5})  # whatever a kernel sends: missing fields are empty
    assert (c.error.ename, c.error.evalue, c.error.traceback) == ("5", "", ())


def test_inline_marker_cuts_the_crossing_stream_and_keeps_nothing_after():
    c = OutputCollector(20)  # a stream costs its text and its name
    c.feed(*_stream("12345"))
    c.feed(*_stream("6789abcdef"))
    c.feed(*_stream("more"))
    c.feed("display_data", {"data": {"text/plain": "1"}, "metadata": {}})
    assert [o.text for o in c.outputs] == ["123456789abcde", limit_marker(20).text]
    assert c.used == 20 and c.dropped > 0


def test_drop_policy_drops_what_does_not_fit_counts_it_and_keeps_what_fits_later():
    c = OutputCollector(100, inline_marker=False)
    c.feed(*_stream("a"), size=60)
    c.feed(*_stream("b"), size=60)  # does not fit: dropped, counted
    c.feed("comm_msg", {"data": {}}, size=30)  # not an output, but it used the budget
    c.feed(*_stream("c"), size=5)
    assert c.outputs == [Output(kind="stream", name="stdout", text="ac")]
    assert (c.used, c.dropped) == (95, 60)
    c.feed("comm_msg", {}, size=10)
    assert c.dropped == 70
