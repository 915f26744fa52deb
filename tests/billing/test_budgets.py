"""Budgets on a real workspace (embedded Dask cluster, declared GPUs, real kernels): set, refuse, warn,
stop a running %%gpu cell and a running map; reports, CSV, usage(), utilisation."""

import csv
import io
import time
import uuid

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import burstlab
import burstlab.workspace.workspace as workspace_module
from burstlab import fanout
from burstlab.errors import BudgetExceeded, ConfigError

H100_PER_S = 1097  # micro-dollars per second of one H100 at the default rate


@pytest.fixture(scope="module")
def bws(tmp_path_factory):
    # environment="off": a new session's package check would eat seconds of these tiny budgets before the cell runs
    ws = burstlab.Workspace(home=str(tmp_path_factory.mktemp("budget-home")), user="budget-tester",
                            notebook="budget.ipynb", heartbeat_interval=0.2, worker_idle_timeout=2.0,
                            adapt_interval=0.05, environment="off")
    yield ws
    ws.close()


@pytest.fixture
def nb(bws):
    """A notebook name of this test's own, so spending starts at zero."""
    bws.notebook = f"nb-{uuid.uuid4().hex[:8]}.ipynb"
    yield bws.notebook
    bws.stop("all")


@pytest.fixture
def shell(bws):
    """An IPython shell whose magics use ``bws``."""
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "burstlab")
    saved = workspace_module._workspace
    workspace_module._workspace = bws
    yield sh
    workspace_module._workspace = saved


def _free(ws, gpu_type):
    return {e.type: e.free for e in ws.hosts()}[gpu_type]


def _wait_free(ws, gpu_type, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while _free(ws, gpu_type) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    return _free(ws, gpu_type)


def test_set_list_remove_and_the_wire_shape(bws, nb):
    status = bws.set_budget("notebook", nb, 5, soft_fraction=0.9)
    assert status.to_json() == {"scope": "notebook", "name": nb, "limit_microusd": 5_000_000, "soft_fraction": 0.9,
                                "spent_microusd": 0, "remaining_microusd": 5_000_000, "state": "ok", "period": ""}
    assert bws.set_budget("notebook", nb, 0.1).limit_microusd == 100_000  # replaced; 0.1 is exact
    assert any(b.name == nb for b in bws.budgets())
    assert bws.remove_budget("notebook", nb) and not bws.remove_budget("notebook", nb)
    assert not any(b.name == nb for b in bws.budgets())
    with pytest.raises(ConfigError, match="above 0"):
        bws.set_budget("notebook", nb, 0)
    with pytest.raises(ConfigError, match="at most 1"):
        bws.set_budget("notebook", nb, 5, soft_fraction=2)
    with pytest.raises(ConfigError, match="'user' or 'notebook'"):
        bws.set_budget("team", "x", 5)


def test_a_session_that_would_start_over_budget_is_refused_with_the_numbers(bws, nb):
    bws.set_budget("notebook", nb, 0.0005)  # less than one second of an H100
    with pytest.raises(BudgetExceeded, match=r"notebook budget for 'nb-.*': \$0.0000 spent of \$0.0005.*"
                                             r"at least \$0.0011 \(one second\).*%gpu budget"):  # 1,097 micro-dollars, rounded up
        bws.session("H100")
    assert _free(bws, "H100") == 2  # nothing was leased
    bws.remove_budget("notebook", nb)


def test_budget_stops_a_running_gpu_cell_and_says_why(bws, nb, shell):
    with capture_output() as out:
        shell.run_line_magic("gpu", "budget 0.004")
    assert f"Notebook budget for '{nb}': $0.0040" in out.stdout
    t = time.monotonic()
    with capture_output() as out:
        result = shell.run_cell("%%gpu H100\nimport time\nfor i in range(600):\n    time.sleep(0.1)")
    elapsed = time.monotonic() - t
    assert isinstance(result.error_in_exec, BudgetExceeded), (result.error_in_exec, out.stderr)
    message = str(result.error_in_exec)
    assert "Stopped at the limit" in message and "spent of $0.0040" in message and "GPUs released" in message
    assert elapsed < 20  # ~4 s of H100, not the cell's 60 s
    assert "80% of the notebook budget" in out.stderr  # the soft warning came first
    assert _wait_free(bws, "H100", 2) == 2  # the GPU is free again
    [row] = bws.usage(notebook=nb)
    assert row.stop_ns is not None and not row.recovered
    # Stopped within the second that reached the limit (billing is per started second).
    assert 4000 <= row.cost_microusd <= 4000 + 2 * H100_PER_S
    [status] = [b for b in bws.budgets() if b.name == nb]
    assert status.state == "exceeded" and status.remaining_microusd == 0
    with capture_output() as out:  # the next cell is refused before anything starts
        result = shell.run_cell("%%gpu H100\n1")
    assert isinstance(result.error_in_exec, BudgetExceeded) and "Refused" in str(result.error_in_exec)
    with capture_output() as out:
        shell.run_line_magic("gpu", "budget")
    assert nb in out.stdout and "exceeded" in out.stdout
    with capture_output() as out:
        shell.run_line_magic("gpu", "budget --remove")
    assert "Removed" in out.stdout
    assert shell.run_cell("%%gpu H100 --quiet\n6 * 7").result.data["text/plain"] == "42"


def _slow(x):
    import time

    time.sleep(0.25)
    return x


def test_budget_stops_a_running_map_and_frees_its_gpus(bws, nb):
    bws.set_budget("notebook", nb, 0.006)
    log = io.StringIO()
    t = time.monotonic()
    with pytest.raises(BudgetExceeded, match=r"Stopped at the limit.*the map _slow was cancelled"):
        fanout.map(_slow, range(400), gpu="H100", workspace=bws, progress=log)
    assert time.monotonic() - t < 30  # 400 x 0.25 s would take 50 s on two GPUs
    assert "_slow is estimated to cost $" in log.getvalue()  # from the first inputs, checked against the budget
    assert "it will be stopped when the budget is spent" in log.getvalue()
    assert _wait_free(bws, "H100", 2) == 2
    rows = bws.usage(notebook=nb, kind="map")
    assert rows and all(r.stop_ns is not None for r in rows)
    spent = sum(r.cost_microusd for r in rows)
    assert 6000 <= spent <= 6000 + 2 * 2 * H100_PER_S  # two workers, each stopped within its current second
    with pytest.raises(BudgetExceeded, match="Refused.*the map _slow would cost at least"):
        fanout.map(_slow, range(3), gpu="H100", workspace=bws, progress=False)


def test_a_user_budget_covers_every_notebook(bws, nb):
    bws.set_budget("user", bws.user, 10_000)
    spent = bws.ledger.spending(user=bws.user)[0]
    bws.set_budget("user", bws.user, (spent + 500) / 1e6)  # less than a second left
    try:
        with pytest.raises(BudgetExceeded, match="user budget for 'budget-tester'"):
            bws.session("H100")
    finally:
        assert bws.remove_budget("user", bws.user)


def test_map_intervals_are_open_while_the_map_runs(bws, nb):
    """The lab shows cost accruing: map workers' intervals open at the start and heartbeat."""
    call = fanout.function(_slow, gpu="A100", workspace=bws).spawn(0)
    seen = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and seen is None:
        rows = [r for r in bws.usage(notebook=nb, kind="map") if r.stop_ns is None]
        seen = rows[0] if rows else None
        time.sleep(0.02)
    assert call.result() == 0
    assert seen is not None and seen.resource == "A100" and seen.detail["function"] == "_slow"
    [row] = bws.usage(notebook=nb, kind="map")
    assert row.stop_ns is not None and row.stop_ns - row.start_ns >= 0.25e9  # the input's own time


def test_bill_report_csv_and_usage(bws, nb, shell, tmp_path):
    fanout.map(str, range(5), gpu="H100", workspace=bws, progress=False)
    with capture_output() as out:
        shell.run_line_magic("gpu", "bill --operator")
    text = out.stdout
    assert f"This notebook ({nb}):" in text and "User budget-tester, all notebooks:" in text
    assert "H100 (declared)" in text and "map" in text and "Utilisation" in text
    path = tmp_path / "bill.csv"
    with capture_output() as out:
        shell.run_line_magic("gpu", f"bill --csv {path}")
    rows = list(csv.DictReader(path.open()))
    assert rows and all(r["user"] == "budget-tester" for r in rows)
    assert sum(int(r["cost_microusd"]) for r in rows) == sum(r.cost_microusd for r in bws.usage(user=bws.user))
    frame = burstlab.usage(notebook=nb, workspace=bws)
    assert list(frame["kind"]) == ["map"] * len(frame) and frame["cost_microusd"].sum() > 0
    assert str(frame["start"].dtype).startswith("datetime64")
    records = burstlab.usage(notebook=nb, as_frame=False, workspace=bws, csv=tmp_path / "u.csv")
    assert [r.id for r in records] == list(frame["id"])
    assert len((tmp_path / "u.csv").read_text().splitlines()) == len(records) + 1


def test_progress_line_shows_the_estimate():
    from burstlab.fanout._progress import summary

    line = summary("f", 100, 10, 0, 0, 2, 3.0, 2_000, estimate_microusd=18_000)
    assert line.endswith("$0.0020 | est. $0.0200 in all")


def test_html_bill_in_a_notebook(bws, nb):
    from burstlab.magics.render import Report, bill_section

    html = bill_section(Report(), bws.usage(user=bws.user), "<all>", ("notebook", "kind", "resource", "day"))._repr_html_()
    assert "<table>" in html and "&lt;all&gt;" in html and "GPU type" in html


def test_provisioned_gpu_time_and_utilisation(bws, nb):
    fanout.map(_slow, range(4), gpu="H100", workspace=bws, progress=False)
    bws.watcher.wake()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not bws.usage(kind="provisioned"):
        time.sleep(0.1)
    provisioned = bws.usage(kind="provisioned")
    assert provisioned and all(r.user == "" and r.resource in ("H100", "A100") for r in provisioned)
    assert not [r for r in bws.usage(user=bws.user) if r.kind == "provisioned"]  # never on a user's bill
    util = {u.resource: u for u in bws.utilisation()}
    assert 0 < util["H100"].leased_s <= util["H100"].provisioned_s * 1.05
