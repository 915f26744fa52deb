"""The pure parts of fan-out: no processes (the embedded cluster's scaling decision is in tests/remote_kernel)."""

import io

from burstlab.fanout import _policy
from burstlab.fanout._progress import Progress, summary


def test_first_chunks_split_small_inputs_evenly_and_probe_with_one_otherwise():
    assert _policy.first_chunk_size(100_000, 2, 5) == 50_000  # cheap to send: the whole map in one round trip each
    assert _policy.first_chunk_size(10**9, 2, 1) == 1  # more than FIRST_BYTES in all: a one-input probe
    assert _policy.first_chunk_size(1_000_000, 4, 1) == _policy.MAX_CHUNK
    assert _policy.first_chunk_size(11, 2, 100) == 6
    assert _policy.first_chunk_size(1000, 2, 10 << 20) == 1  # large inputs: one input first
    assert _policy.first_chunk_size(None, 2, 5) == 1  # a generator: one input first
    assert _policy.first_chunk_size(1, 2, 5) == 1


def test_chunk_size_starts_at_one_and_grows_to_the_target():
    assert _policy.chunk_size(None, 1, 2, 10_000) == 1
    assert _policy.chunk_size(1e-6, 1, 2, 10**9) == _policy.MAX_CHUNK  # a worker's budget bounds a misjudgement
    assert _policy.chunk_size(1e-7, 1, 2, 10**9, max_size=10**9) == _policy.GROWTH  # growth is capped
    assert _policy.chunk_size(1e-6, 4096, 2, 10**6) == _policy.MAX_CHUNK
    assert _policy.chunk_size(1e-6, 4096, 2, None) == _policy.MAX_CHUNK_STREAM  # a generator: bounded read-ahead
    assert _policy.chunk_size(0.01, 512, 2, 10_000) == 20  # 0.2 s of 10 ms inputs
    assert _policy.chunk_size(5.0, 1, 2, 10_000) == 1  # long inputs: one per task
    assert _policy.chunk_size(0.01, 512, 2, 10) == 5  # leave work for every worker ...
    assert _policy.chunk_size(1e-6, 512, 2, 10) == 10  # ... unless the chunks would be too short to pay
    assert _policy.chunk_size(1e-7, 4096, 2, 30_000) == 30_000  # no tail of ever smaller chunks


def test_retries_back_off_exponentially_up_to_a_cap():
    r = _policy.Retries(3, backoff=2.0, initial=1.0, max_delay=3.0)
    assert [r.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert _policy.Retries(2, backoff=1.0, initial=0.5).delay(2) == 0.5


def test_retry_policy_separates_infrastructure_from_user_errors():
    assert _policy.should_retry(1, 2, True, None, ())
    assert not _policy.should_retry(3, 2, True, None, ())
    assert not _policy.should_retry(1, 2, False, ValueError(), ())
    assert _policy.should_retry(1, 2, False, ValueError(), (ValueError,))
    assert not _policy.should_retry(1, 2, False, KeyError(), (ValueError,))


def test_span_cost_bills_whole_seconds():
    spans = {"a": _policy.Span(0, 1_500_000_000), "b": _policy.Span(0, 10)}
    assert _policy.spans_cost_microusd(spans, 1_000_000) == 3 * 1000  # 2 s + 1 s at $0.001/s


def test_progress_text_never_prints_a_line_per_input():
    assert summary("f", 10, 7, 1, 2, 2, 1.25, 1500) == "f: 8/10 done | 1 failed | 2 retried | 2 workers up | 1.2 s | $0.0015"
    out = io.StringIO()  # not a terminal: a line at the start and one at the end
    p = Progress("f", 1000, stream=out, interval=0)
    for i in range(1000):
        p.update(done=i, failed=0, retried=0, workers=1, elapsed=0.0, cost_microusd=0)
    p.update(done=1000, failed=0, retried=0, workers=1, elapsed=0.0, cost_microusd=0, final=True)
    assert p.lines == 2 and "1000/1000 done" in out.getvalue()


def test_progress_line_shows_setup_eta_and_checkpoint_reuse():
    line = summary("f", 100, 40, 1, 3, 2, 12.0, 2_000, setup_s=4.25, eta_s=95.0, reused=10)
    assert line.startswith("f: 41/100 done | 10 from checkpoint | 1 failed | 3 retried | 2 workers up | set-up 4.2 s")
    assert "12.0 s | ETA 1 min 35 s" in line
    assert "ETA" not in summary("f", 100, 100, 0, 0, 2, 12.0, 2_000, eta_s=0.0)  # nothing left: no ETA
