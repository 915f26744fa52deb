"""Configuration: one traitlets ``Configurable``, ``c.BurstLab.<name>``.

Environment variables are only defaults of traits (``BURSTLAB_DECLARED_GPUS``,
``BURSTLAB_SCHEDULER``, ``BURSTLAB_HOME``, ``BURSTLAB_LEDGER_URL``), so ``jupyter_server_config.py``,
``ipython_config.py``, command-line flags and JupyterHub deployments configure burstlab the usual way.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from traitlets import Bool, Dict, Enum, Float, Int, TraitError, Unicode, Union, default, validate
from traitlets.config import Configurable


ENVIRONMENT_MODES = ("off", "check", "sync", "strict")


class BurstLab(Configurable):
    declared_gpus = Unicode(
        help="GPUs to declare where NVML finds none, as TYPE:COUNT[,TYPE:COUNT] (e.g. H100:2,A100:1). "
        "Declared GPUs have no CUDA behind them and are labelled 'declared' everywhere. "
        "Default: $BURSTLAB_DECLARED_GPUS."
    ).tag(config=True)

    scheduler = Unicode(
        help="Address of an existing Dask scheduler (tcp://host:8786) whose workers carry GPUs as resources. "
        "Empty: start an embedded cluster on this machine. Default: $BURSTLAB_SCHEDULER."
    ).tag(config=True)

    home = Unicode(
        help="Directory for burstlab's state: the SQLite ledger, connection files. "
        "Default: $BURSTLAB_HOME or ~/.local/share/burstlab."
    ).tag(config=True)

    ledger_url = Unicode(
        help="Where the ledger lives: empty for SQLite under `home`, sqlite:///path, or "
        "postgresql://user:password@host:5432/db (pip install 'burstlab[postgresql]'), shared by many hosts. "
        "Default: $BURSTLAB_LEDGER_URL."
    ).tag(config=True)

    user = Unicode(help="User name that usage is attributed to. Default: $BURSTLAB_USER or the login name.").tag(config=True)

    idle_timeout = Float(
        help="Seconds a %%gpu session may sit idle before its GPU is released (scale to zero). 0 disables. "
        "Default: $BURSTLAB_IDLE_TIMEOUT or 600.",
    ).tag(config=True)

    heartbeat_interval = Float(5.0, help="Seconds between ledger heartbeats of open intervals.").tag(config=True)

    kernel_pool_size = Int(
        1, help="Pre-started kernels kept ready per GPU worker, so a new session's first output comes fast. 0 disables."
    ).tag(config=True)
    sandbox_pool_size = Int(
        help="Started sandboxes the workspace keeps ready (its SandboxPool), so that a sandbox's first result "
             "comes in one round trip. 0 disables (every sandbox starts when asked for). Default 2, or "
             "BURSTLAB_SANDBOX_POOL_SIZE."
    ).tag(config=True)

    worker_threads = Int(
        2, help="Threads per embedded GPU worker. A %%gpu session holds one thread for its whole life."
    ).tag(config=True)

    worker_idle_timeout = Float(
        60.0,
        help="Seconds an embedded-cluster worker (a GPU's, or the CPU one) may sit idle before it is stopped "
        "(scale to zero). It starts again when work asks for it.",
    ).tag(config=True)

    adapt_interval = Float(
        0.1, help="Seconds between the embedded cluster's adaptive checks (how fast workers start for new work)."
    ).tag(config=True)

    cluster = Dict(
        help="A Dask cluster manager to start GPU workers with, as dask-labextension configures one: "
        "{'module': 'dask_jobqueue', 'class': 'SLURMCluster', 'kwargs': {...}}. Its workers start when sessions and "
        "maps ask for them and stop when idle (see worker_templates). Empty: the embedded cluster (or scheduler)."
    ).tag(config=True)

    worker_templates = Dict(
        help="Per GPU type, how the cluster manager makes a worker: {'H100': {'max': 4, 'kwargs': {...}, "
        "'resources': {...}}}: at most `max` workers of one GPU each, the manager's worker options with `kwargs` "
        "on top. Used with c.BurstLab.cluster."
    ).tag(config=True)

    min_idle = Dict(
        help="Per GPU type, workers kept up and idle beyond what sessions and maps use, so the next one starts "
        "at once: {'H100': 1}. For the embedded cluster and c.BurstLab.cluster. A warm worker's up-time is "
        "metered as 'provisioned' (the operator's cost), never billed to a user.",
    ).tag(config=True)

    host_lost_timeout = Float(
        10.0, help="Seconds a GPU session's kernel may go without answering its heartbeat before the session is "
        "declared lost (its host died or its network is down): the running cell fails naming the host, the GPUs "
        "are released and the meter closes at the last answer. A map whose only host of its type goes as long "
        "unheard ends with an error naming the host, its finished results kept. 0 disables the check."
    ).tag(config=True)

    environment = Unicode(
        "check", help="What a new GPU session does with the notebook's environment before its first cell: "
        "'check' compares the distributions the notebook imported with the host's (once per host and environment) "
        "and shows what differs; 'sync' also ships the pure-Python ones and the .py modules beside the notebook "
        "(cached on the host by content hash); 'strict' refuses to start when anything differs; 'off' skips it. "
        "%%gpu --sync / --strict choose per cell. Default: $BURSTLAB_ENVIRONMENT or 'check'."
    ).tag(config=True)

    rates = Dict(
        help="Per-second prices in US dollars, merged over the defaults in burstlab.billing.rates: per GPU-second "
        "by GPU type (e.g. {'H100': 0.001097}), 'CPU' per CPU-second and 'MEM' per GiB-second of a sandbox's "
        "memory limit. Each interval keeps the rate it opened with. Default: $BURSTLAB_RATES (JSON) or {}."
    ).tag(config=True)

    isolate_sessions = Union(
        [Bool(), Enum(["auto"])], default_value="auto",
        help="Whether a GPU session's kernel (%%gpu, POST sessions, a 'burstlab · GPU' notebook kernel) runs in the "
        "session jail on its GPU host: its user's own uid and persistent work dir, exactly its leased GPUs' device "
        "nodes, nothing of the service's or other users' (tokens, certificates, connection files, files). "
        "'auto' (default): on when this workspace serves several users (`jupyter burstlab`, or API tokens), "
        "falling back to a plain kernel, said in the session's record, on a host whose worker is not root. "
        "True: always, and a session on such a host fails naming the fix. False: never.",
    ).tag(config=True)

    @default("environment")
    def _environment_default(self):
        return os.environ.get("BURSTLAB_ENVIRONMENT") or "check"

    @validate("environment")
    def _check_environment(self, proposal):
        if proposal["value"] not in ENVIRONMENT_MODES:
            raise TraitError(f"c.BurstLab.environment must be one of {', '.join(ENVIRONMENT_MODES)}, "
                             f"not {proposal['value']!r}.")
        return proposal["value"]

    @default("idle_timeout")
    def _idle_default(self):
        return float(os.environ.get("BURSTLAB_IDLE_TIMEOUT") or 600.0)

    @default("sandbox_pool_size")
    def _default_sandbox_pool_size(self):
        return int(os.environ.get("BURSTLAB_SANDBOX_POOL_SIZE") or 2)

    @default("rates")
    def _rates_default(self):
        import json

        return json.loads(os.environ["BURSTLAB_RATES"]) if os.environ.get("BURSTLAB_RATES") else {}

    @default("declared_gpus")
    def _declared_default(self):
        return os.environ.get("BURSTLAB_DECLARED_GPUS", "")

    @default("scheduler")
    def _scheduler_default(self):
        return os.environ.get("BURSTLAB_SCHEDULER", "")

    @default("home")
    def _home_default(self):
        return os.environ.get("BURSTLAB_HOME") or str(Path.home() / ".local" / "share" / "burstlab")

    @default("ledger_url")
    def _ledger_default(self):
        return os.environ.get("BURSTLAB_LEDGER_URL", "")

    @default("user")
    def _user_default(self):
        if os.environ.get("BURSTLAB_USER"):
            return os.environ["BURSTLAB_USER"]
        try:
            return getpass.getuser()
        except Exception:  # no passwd entry (containers)
            return "unknown"


__all__ = ["BurstLab"]
