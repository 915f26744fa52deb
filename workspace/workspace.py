"""The Workspace: one per notebook process (or per server), owning everything a user holds.

It owns the Dask client (an embedded cluster on this machine by default, or an existing scheduler),
the GPU sessions, and the meter and ledger. The magics and the Python API are thin over it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from typing import Any

from burstlab.workspace._sandboxes import Sandboxes
from burstlab.workspace._watcher import Watcher
from burstlab.billing import Meter, RateCard, cost_microusd, open_ledger
from burstlab.config import BurstLab
from burstlab.errors import BurstlabError, GpuSpecError, SessionLostError
from burstlab.gpus import discover, parse_gpu_spec
from burstlab.wire import (BudgetStatus, GpuInventoryEntry, GpuSpec, MapRecord, SandboxRecord, SessionIsolation,
                           SessionRecord, UsageRecord)


LOW_LEVEL_LOG_LENGTH = 32  # see Workspace.client


def default_notebook() -> str:
    """What usage is attributed to: the notebook's path when Jupyter tells us (``JPY_SESSION_NAME``), the name
    set in ``BURSTLAB_NOTEBOOK``, the notebook that the process which started this kernel is executing
    (``jupyter nbconvert --execute``, ``papermill``), else this process."""
    return (os.environ.get("JPY_SESSION_NAME") or os.environ.get("BURSTLAB_NOTEBOOK") or _notebook_of_parent()
            or f"pid-{os.getpid()}")


def _notebook_of_parent() -> str | None:
    """The one ``.ipynb`` named on the command line of the process that started this kernel, if any.

    nbclient (under nbconvert and papermill) starts the kernel with the notebook's folder as its working
    directory but does not pass the notebook's name; its parent's command line has it."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        import psutil

        parent = psutil.Process(os.getppid())
        notebooks = [a for a in parent.cmdline()[1:] if a.endswith(".ipynb")]
        if len(notebooks) != 1:
            return None
        path = os.path.join(parent.cwd(), notebooks[0])
    except Exception:  # the parent is gone or not ours to read: fall back to the process id
        return None
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


class Workspace:
    """GPU sessions, the Dask client that places them, and the ledger that bills them."""

    def __init__(self, config=None, notebook: str | None = None, *, serve: bool = False, **settings: Any):
        self.config = BurstLab(config=config, **settings)
        self.notebook = notebook or default_notebook()
        self.user = self.config.user
        # serve=True: this is a Jupyter server's workspace (jupyter_ext), which others join; it never
        # joins one itself. Sessions it creates are marked origin "server", a notebook's "kernel".
        self.serve = serve
        self.origin = "server" if serve else "kernel"
        # Whether this workspace serves several users (the jupyter_ext app says so): c.BurstLab.isolate_sessions
        # = "auto" then runs session kernels in the session jail (session_isolation()).
        self.multi_user = False
        self.ledger = open_ledger(self.config.ledger_url, self.config.home)
        self.ledger.recover()
        self.meter = Meter(self.ledger, RateCard.from_config(self.config.rates), self.config.heartbeat_interval)
        self.watcher = Watcher(self)  # budgets (warn, stop, refuse) and GPU up-time
        self._sandboxes = Sandboxes(self.meter, self.config.sandbox_pool_size)  # its pool, and those taken
        self.sessions: dict[str, Any] = {}
        self.ended: dict[str, str] = {}  # session key -> why it ended, shown by the next cell for that key
        self._lock = threading.RLock()
        self._client = None
        self._cluster = None
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()
        self._idle_published: dict[str, tuple[float | None, float]] = {}  # session id -> (idle_since, timeout)
        _close_at_shutdown(self)

    # -- the Dask side --------------------------------------------------------------------------

    @property
    def client(self):
        """The Dask client, connecting (or starting the embedded cluster) on first use."""
        with self._lock:
            if self._closed:
                raise BurstlabError("This workspace is closed; make a new one with burstlab.Workspace().")
            if self._client is not None and self._cluster is None and self._client.status in ("closed", "closing"):
                self._client = None  # Dask gave up on a scheduler that went away: connect afresh (it may be back)
            if self._client is None:
                import dask
                from distributed import Client

                from burstlab.remote_kernel.cluster import start_embedded

                # distributed's debugging logs keep the last N messages of every stream, task payloads
                # (a map's pickled inputs) included: at its default of 1000, megabytes a notebook never
                # gets back. The embedded cluster's processes get this setting too.
                dask.config.set({"distributed.admin.low-level-log-length": LOW_LEVEL_LOG_LENGTH})
                from burstlab.remote_kernel.pool import KernelPoolPlugin

                scheduler = self.config.scheduler or self._server_scheduler()
                if scheduler:
                    try:
                        from burstlab.remote_kernel._tls import security_for

                        self._client = Client(scheduler, timeout="10s", set_as_default=False,
                                              security=security_for(scheduler, self.config.home))
                    except OSError as exc:
                        raise BurstlabError(
                            f"Cannot reach the Dask scheduler at {scheduler} ({exc}). Check the address "
                            "in BURSTLAB_SCHEDULER / c.BurstLab.scheduler, or unset it to use the embedded cluster."
                        ) from exc
                elif self.config.cluster:  # a Dask cluster manager (dask-jobqueue, a SpecCluster): docs/fleet.md
                    from burstlab.remote_kernel.managers import start_managed

                    self._cluster = start_managed(self.config.cluster, self.config.worker_templates,
                                                  idle_timeout=self.config.worker_idle_timeout,
                                                  min_idle=self.config.min_idle)
                    self._client = Client(self._cluster, set_as_default=False)
                    self.watcher.start()  # its workers' up-time (warm ones included) is 'provisioned' from now on
                else:  # the embedded cluster, shared by this machine's notebook processes (remote_kernel/_shared.py)
                    from burstlab.remote_kernel import _shared

                    gpus = discover(self.config.declared_gpus)
                    self._cluster, joined = _shared.join_or_start(
                        self.config.home, _shared.serves(gpus), lambda: start_embedded(
                            gpus, self.config.worker_threads,
                            idle_timeout=self.config.worker_idle_timeout, interval=self.config.adapt_interval,
                            home=self.config.home, min_idle=self.config.min_idle,
                        ))
                    if joined:  # another notebook process runs it: lease from the same scheduler
                        from burstlab.remote_kernel._tls import embedded_security

                        self._client = Client(joined, timeout="10s", set_as_default=False,
                                              security=embedded_security(self.config.home))
                    else:
                        self._client = Client(self._cluster, set_as_default=False)
                        self.watcher.start()  # records the embedded cluster's GPU up-time from now on
                if self.config.kernel_pool_size > 0 and not self._client.run_on_scheduler(_has_pool_plugin):
                    # Once per cluster: registering again would restart every worker's warm pool.
                    self._client.register_plugin(KernelPoolPlugin(self.config.kernel_pool_size))
            return self._client

    def _server_scheduler(self) -> str:
        """In a kernel started by a Jupyter server with burstlab: the server's scheduler, so that this
        notebook's sessions and maps are the server's too (one workspace). "" when there is none."""
        url = os.environ.get("BURSTLAB_URL", "")
        if self.serve or not url:
            return ""
        import json
        import sys
        import urllib.request

        request = urllib.request.Request(url.rstrip("/") + "/burstlab/api/workspace")
        if os.environ.get("BURSTLAB_TOKEN"):
            request.add_header("Authorization", f"token {os.environ['BURSTLAB_TOKEN']}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)["scheduler"]
        except (OSError, ValueError, KeyError) as exc:
            sys.stderr.write(f"[burstlab: the Jupyter server's workspace at {url} did not answer ({exc}); "
                             "this notebook uses its own embedded cluster, which the lab does not see]\n")
            return ""

    @property
    def connected(self) -> bool:
        """Whether this workspace has its Dask client already (or names a scheduler to join): before that, it
        holds no session and sees no map, and asking would start the embedded cluster."""
        return self._client is not None or bool(self.config.scheduler)

    def hosts(self) -> list[GpuInventoryEntry]:
        """GPU inventory: type, host, count, free, and whether found through NVML or declared."""
        from burstlab.remote_kernel.cluster import inventory, slots

        return inventory(slots(self.client))

    # -- sessions -------------------------------------------------------------------------------

    def session_isolation(self) -> SessionIsolation:
        """Whether new GPU sessions' kernels run in the session jail, and why (``c.BurstLab.isolate_sessions``)."""
        from burstlab.remote_kernel._jailed import decide

        setting = self.config.isolate_sessions
        enabled, _, reason = decide(setting, self.multi_user)
        return SessionIsolation(setting={True: "on", False: "off"}.get(setting, "auto"), enabled=enabled,
                                reason=reason)

    def _isolation_plan(self, user: str) -> dict | None:
        """What the lease takes to its GPU host: the sandbox layer's jailed kernel for ``user``, or None."""
        from burstlab.remote_kernel._jailed import plan

        if not self.session_isolation().enabled:
            return None
        from burstlab.sandbox._served import WORK_ROOT_ENV, start_served_kernel

        # A work root set here goes with the lease (the embedded cluster's workers keep the environment their fork
        # server started with); else each GPU host's own (its worker's BURSTLAB_SESSION_WORK_ROOT, or the default).
        here = {"work_root": os.environ[WORK_ROOT_ENV]} if os.environ.get(WORK_ROOT_ENV) else {}
        return plan(self.config.isolate_sessions, self.multi_user, user, start_served_kernel, here)

    def session(self, spec: str | list[str] | GpuSpec, wait: float = 0.0, *, user: str | None = None,
                notebook: str | None = None, reuse: bool = True, env: dict | None = None,
                secrets: list[str] | None = None, environment: str | None = None):
        """The session for ``spec``: this notebook's running one (``reuse``), or a new one holding fresh
        GPUs. ``user``/``notebook`` attribute it (the server passes its caller's).

        ``env`` and ``secrets`` (names, read here) are set in the kernel; ``environment`` ("off", "check",
        "sync", "strict"; default ``c.BurstLab.environment``) says what to do about the notebook's packages and
        the modules beside it (docs/environment.md). What was found is in ``session.prepared``."""
        session = self._session(spec, wait, user=user, notebook=notebook, reuse=reuse)
        mode = environment or ("off" if self.origin == "server" else self.config.environment)
        if mode not in ("off", "check", "sync", "strict"):
            raise GpuSpecError(f"environment={mode!r}: use 'off', 'check', 'sync' or 'strict'.")
        fresh = session.prepared is None
        if env or secrets or (mode != "off" and (fresh or mode in ("sync", "strict"))):
            from burstlab.remote_kernel.prepare import prepare

            try:
                session.prepared = prepare(session, env=env, secrets=secrets, sync=mode == "sync",
                                           strict=mode == "strict", check=mode != "off")
            except BaseException as exc:
                if fresh:  # a session that cannot be made ready is not left holding GPUs
                    session.stop("its environment could not be prepared")
                stopped = self.budget_stop(session) if isinstance(exc, SessionLostError) else None
                if stopped is not None:  # the budget ran out while it was being prepared: say so, with the numbers
                    raise stopped from None
                raise
        elif fresh:
            from burstlab.remote_kernel.prepare import Prepared

            session.prepared = Prepared()
        return session

    def _session(self, spec, wait: float, *, user: str | None, notebook: str | None, reuse: bool):
        from burstlab.remote_kernel import registry
        from burstlab.remote_kernel.lease import acquire
        from burstlab.remote_kernel.session import GpuSession

        parsed = parse_gpu_spec(spec)
        key = str(parsed)
        user = user or self.user
        notebook = notebook or self.notebook
        if reuse:
            with self._lock:
                for existing in self.sessions.values():
                    if (existing.key, existing.user, existing.notebook) == (key, user, notebook) \
                            and existing.state == "running":
                        self.watcher.check_cached(user, notebook)
                        return existing
        first = parsed.choices[0]
        self.watcher.admit(user=user, notebook=notebook, what=f"a new {key} session",
                           start_microusd=cost_microusd(1, self.meter.rates.rate(first.type), first.count))
        client = self.client
        isolation = self._isolation_plan(user)
        lease = acquire(client, parsed, wait=wait, pool_size=self.config.kernel_pool_size, isolation=isolation)
        if isolation is None:  # the workspace's own reason, not the host's generic one
            lease.isolation = f"not isolated: {self.session_isolation().reason}"
        try:  # holding and billing are one step: a ledger that cannot open the interval undoes the lease
            interval_id = self.meter.start(
                kind="session", user=user, notebook=notebook, resource=lease.request.type,
                quantity=lease.request.count, declared=lease.declared,
                detail={"host": lease.slots[0].host, "gpus": [s.index for s in lease.slots], "lease": lease.id,
                        "spec": key},
            )
        except BaseException:
            lease.release(self.client)
            lease.wait_released(self.client)
            raise
        if not lease.declared:  # NVML utilisation and memory into the interval's detail (declared GPUs have none)
            from burstlab.remote_kernel._gpu_use import sampler

            self.meter.watch_gpus(interval_id, sampler(self.client, [s.resource for s in lease.slots]))
        try:
            session = GpuSession(key, lease, self._session_ended, user=user, notebook=notebook,
                                 released_elsewhere=self._released_elsewhere,
                                 lost_after=self.config.host_lost_timeout)
        except BaseException:
            lease.release(self.client)
            self.meter.stop(interval_id)
            raise
        session.interval_id = interval_id
        with self._lock:
            self.sessions[session.id] = session
            self.ended.pop(key, None)
        registry.publish(self.client, "session", session.id, {
            "id": session.id, "spec": key, "gpu_type": session.gpu_type, "count": session.count,
            "declared": session.declared, "host": session.host, "user": user, "notebook": notebook,
            "started": session.started, "origin": self.origin, "interval_id": session.interval_id,
            "lease_key": lease.futures[0].key, "lease_keys": [f.key for f in lease.futures],
            "idle_timeout": float(self.config.idle_timeout), "idle_since": session.started,
            "isolated": lease.isolated, "isolation": lease.isolation,
        })
        self._ensure_reaper()
        self.watcher.start()
        return session

    # -- the shared view: every session and map on this cluster, whoever holds it ---------------

    def list_sessions(self, user: str | None = None, ended: bool = False) -> list[SessionRecord]:
        """Running sessions on this workspace's cluster (this process's and every notebook's that
        joined it), priced up to now. ``user`` filters. ``ended``: also those that ended in the last few
        minutes (``registry.ENDED_KEEP_S``), with who or what ended them (``ended_by``, ``why``)."""
        from burstlab.remote_kernel import registry

        now = self.meter.clock.now_ns()
        out = []
        for record in registry.listing(self.client, "session"):
            if user is not None and record.get("user") != user or (record.get("ended") and not ended):
                continue
            usage = self.ledger.get(record.get("interval_id", ""), now) if record.get("interval_id") else None
            out.append({
                **{k: record.get(k) for k in ("id", "spec", "gpu_type", "count", "declared", "host", "user",
                                              "notebook", "started", "origin")},
                "isolated": bool(record.get("isolated")), "isolation": str(record.get("isolation") or ""),
                "state": record.get("state") or "running",
                "billed_s": usage.billed_s if usage else 0,
                "cost_microusd": usage.cost_microusd if usage else 0,
                "idle_timeout": float(record.get("idle_timeout") or 0),
                "idle_since": None if record.get("ended") else record.get("idle_since"),
                "ended_by": record.get("ended_by") or "",
                "why": record.get("why") or "",
                "ended": record.get("ended"),
            })
        return sorted((SessionRecord.from_json(r) for r in out), key=lambda r: r.started)

    def get_session(self, id: str):
        """This process's session with ``id`` (running or not), or None."""
        return self.sessions.get(id)

    def session_record(self, session, origin: str | None = None) -> SessionRecord:
        """One of this process's sessions as the wire record every front door shows, priced up to now."""
        usage = self.meter.record(session.interval_id) if session.interval_id else None
        running = session.state == "running"
        return SessionRecord(
            id=session.id, spec=session.key, gpu_type=session.gpu_type, count=session.count,
            declared=session.declared, host=session.host, user=session.user, notebook=session.notebook,
            started=session.started, state=session.state, billed_s=usage.billed_s if usage else 0,
            cost_microusd=usage.cost_microusd if usage else 0, origin=origin or self.origin,
            idle_timeout=float(self.config.idle_timeout),
            idle_since=time.time() - (time.monotonic() - session.last_active) if running and not session.busy else None,
            isolated=session.lease.isolated, isolation=session.lease.isolation,
        )

    def stop_session(self, id: str, reason: str = "stopped from the JupyterLab panel") -> bool:
        """Stop session ``id`` wherever it is held. Returns False if no such running session. A
        notebook's session ends in that notebook too: its next %%gpu cell says ``reason``."""
        from burstlab.remote_kernel import registry

        mine = self.sessions.get(id)
        if mine is not None:
            if mine.state != "running":
                return False
            mine.stop(reason)
            return True
        if not registry.request_stop(self.client, "session", id, reason):
            return False
        deadline = time.monotonic() + 10.0  # return once the GPUs are free, as a local stop does
        while time.monotonic() < deadline and any(r["id"] == id and not r.get("ended")
                                                  for r in registry.listing(self.client, "session")):
            time.sleep(0.05)
        return True

    def list_maps(self, user: str | None = None) -> list[MapRecord]:
        """Maps running (or ended within the hour) on this cluster."""
        from burstlab.remote_kernel import registry

        return sorted((MapRecord.from_json(r) for r in registry.listing(self.client, "map")
                       if user is None or r.get("user") == user), key=lambda r: r.started or 0)

    def cancel_map(self, id: str, reason: str = "cancelled from the JupyterLab panel") -> bool:
        """Ask the map ``id`` to stop; its notebook cancels it at its next progress tick (under 1 s)."""
        from burstlab.remote_kernel import registry

        return registry.request_stop(self.client, "map", id, reason)

    def _released_elsewhere(self, session) -> None:
        """Another client stopped ``session`` (its lease is already cancelled): end it here too."""
        from burstlab.remote_kernel import registry

        try:
            reason = registry.stop_reason(self.client, "session", session.id)
        except Exception:
            reason = ""
        session._end("stopped", reason or "stopped by another client of this workspace")

    def pop_ended(self, key: str) -> str | None:
        """Why this notebook's last session of ``key`` ended (stopped idle, lost, stopped elsewhere), once: the
        next cell for that spec says it. None if it ended because its user stopped it, or never ran."""
        with self._lock:
            return self.ended.pop(key, None)

    def budget_stop(self, session) -> BaseException | None:
        """The BudgetExceeded that stopped ``session`` (the budget watcher's), once; None if it was not that."""
        return self.watcher.stopped.pop(getattr(session, "id", session.key), None)

    def adopt_sandbox(self, sandbox) -> None:
        """A sandbox made directly (``burstlab.Sandbox()``) as it starts: metered in this workspace's ledger as
        this process's user and notebook (unless it names others), refused if their budget is spent, closed by
        a budget stop and with the workspace, like those ``sandbox()`` makes; given a warm sandbox from the pool when
        the pool serves its settings. Called on burstlab's loop as it starts, before anything of it exists."""
        sandbox.user = sandbox.user if sandbox.user != os.environ.get("USER", "") else self.user
        sandbox.notebook = sandbox.notebook or self.notebook
        self.admit_sandbox(sandbox.user, sandbox.notebook)
        sandbox.meter = self.meter
        self._sandboxes.adopt(sandbox)

    def admit_sandbox(self, user: str, notebook: str) -> None:
        """Refuse a new sandbox for ``user``/``notebook`` (BudgetExceeded, with the numbers) if a budget is spent."""
        self.watcher.admit(user=user, notebook=notebook, what="a new sandbox", start_microusd=1)

    def find(self, which: str | None = None):
        """The running session a user names by spec or GPU type; the only one if ``which`` is None."""
        running = [s for s in self.sessions.values() if s.state == "running"]
        if which is None:
            if len(running) == 1:
                return running[0]
            if not running:
                raise BurstlabError("No GPU session is running. Start one with a %%gpu TYPE cell.")
            raise BurstlabError(f"Several GPU sessions are running ({', '.join(s.key for s in running)}); name one.")
        try:
            key = str(parse_gpu_spec(which))
        except GpuSpecError:
            key = which
        for s in running:
            if s.key == key or s.gpu_type == key:
                return s
        raise BurstlabError(f"No running GPU session for {which!r}. Running: {', '.join(s.key for s in running) or 'none'}.")

    def stop(self, which: str = "all") -> list[str]:
        """Release sessions: ``"all"``, a spec, or a GPU type. Returns the keys stopped."""
        with self._lock:
            if which in ("all", "", None):
                targets = [s for s in self.sessions.values() if s.state == "running"]
            else:
                targets = [self.find(which)]
        for s in targets:
            s.stop("stopped by the user")
        return [s.key for s in targets]

    def _session_ended(self, session, state: str, reason: str) -> None:
        """Called once when a session stops or is lost: release GPUs, close the meter interval."""
        from burstlab.remote_kernel import registry

        released_ns = self.meter.clock.now_ns()  # billed until the GPUs are given back, not after
        try:
            session.lease.release(self._client)
        except Exception:  # the scheduler is gone: the futures went with it
            pass
        if session.interval_id and state == "lost" and session.last_seen_ns:
            self.meter.close_lost(session.interval_id, session.last_seen_ns)  # billed until the host last answered
        elif session.interval_id:
            self.meter.stop(session.interval_id, stop_ns=released_ns)
        if state == "stopped" and not self._closed:
            # A user's or the idle reaper's stop (never the lease's own done-callback, which runs on
            # Dask's loop): return once the GPUs are free for the next session.
            session.lease.wait_released(self._client)
        session.close_transport()
        if not self._closed:  # listed a few minutes more as ended, saying who or what ended it (the lab's news)
            ended = {"id": session.id, "spec": session.key, "gpu_type": session.gpu_type, "count": session.count,
                     "declared": session.declared, "host": session.host, "user": session.user,
                     "notebook": session.notebook, "started": session.started, "origin": self.origin,
                     "interval_id": session.interval_id, "idle_timeout": float(self.config.idle_timeout),
                     "state": state, "ended": time.time(), "why": reason,
                     "ended_by": self._ended_by(session, state, reason),
                     "isolated": session.lease.isolated, "isolation": session.lease.isolation}
            if state == "lost":  # may run on Dask's loop (the lease's done-callback): no scheduler call there
                threading.Thread(target=_publish_quietly, args=(self._client, session.id, ended), daemon=True,
                                 name="burstlab-ended").start()
            else:
                _publish_quietly(self._client, session.id, ended)
        with self._lock:
            if self.sessions.get(session.id) is session:
                del self.sessions[session.id]
            if state == "lost" or not reason.startswith("stopped by the user"):
                self.ended[session.key] = reason

    def _ended_by(self, session, state: str, reason: str) -> str:
        """Who or what ended ``session`` (``wire.SESSION_ENDED_BY``), from where its stop came."""
        if state == "lost":
            return "lost"
        if session.id in self.watcher.stopped:
            return "budget"
        return next((by for prefix, by in _ENDED_BY if reason.startswith(prefix)), "client")

    def _ensure_reaper(self) -> None:
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="burstlab-idle", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        while not self._closed:
            timeout = self.config.idle_timeout
            self._wake.wait(min(5.0, max(0.1, timeout / 4)) if timeout > 0 else 5.0)
            self._wake.clear()
            if timeout <= 0:
                continue
            now = time.monotonic()
            for s in list(self.sessions.values()):
                busy = s.working
                if s.state == "running" and not busy and now - s.last_active >= timeout:
                    s.stop(f"released after {timeout:g} s idle")
                elif s.state == "running":
                    self._publish_idle(s, None if busy else time.time() - (now - s.last_active), timeout)

    def _publish_idle(self, s, idle_since: float | None, timeout: float) -> None:
        """Keep the session's listed idle clock (GET sessions' ``idle_since``, the panel's "releases in")
        current; republished only when it moved, so an idle session costs no scheduler calls."""
        from burstlab.remote_kernel import registry

        last = self._idle_published.get(s.id)
        if last is not None and last[1] == timeout and (
                idle_since is None and last[0] is None
                or idle_since is not None and last[0] is not None and abs(idle_since - last[0]) < 1.0):
            return
        self._idle_published[s.id] = (idle_since, timeout)
        try:
            registry.publish(self.client, "session", s.id, {"idle_since": idle_since, "idle_timeout": timeout})
        except Exception:  # the listing is informational; the reaper must keep reaping
            pass

    def set_idle_timeout(self, seconds: float) -> None:
        self.config.idle_timeout = float(seconds)
        self._wake.set()

    # -- sandboxes ------------------------------------------------------------------------------

    async def asandbox(self, timeout: float | None = None, memory: int | str | None = None, network: Any = False, *,
                       pids: int | None = None, cpus: float | None = None, user: str | None = None,
                       notebook: str | None = None, **fixed: Any):
        """A started sandbox, from this workspace's warm pool when the pool serves what is asked (no network,
        the default sizes), else a new one; metered as ``user``/``notebook`` (default: this workspace's).
        The caller closes it; the workspace closes what is left when it closes. Runs on burstlab's loop."""
        user, notebook = user or self.user, notebook or self.notebook
        self.watcher.admit(user=user, notebook=notebook, what="a new sandbox",  # refused if a budget is spent
                           start_microusd=cost_microusd(1, self.meter.rates.rate("CPU"), 1))
        sb = await self._sandboxes.acquire(timeout=timeout, memory=memory, network=network, pids=pids, cpus=cpus,
                                           user=user, notebook=notebook, **fixed)
        self.watcher.start()  # its budgets are watched (and enforced) from now on
        return sb

    def sandbox(self, timeout: float | None = None, memory: int | str | None = None, network: Any = False, *,
                pids: int | None = None, cpus: float | None = None, user: str | None = None,
                notebook: str | None = None, **fixed: Any):
        """Blocking twin of :meth:`asandbox`: ``with ws.sandbox(timeout=10) as sb: sb.run("1 + 1")``."""
        from burstlab import _sync

        return _sync.run_sync(self.asandbox(timeout, memory, network, pids=pids, cpus=cpus, user=user,
                                            notebook=notebook, **fixed))

    def check_sandbox(self, network: Any = False, **settings: Any):
        """The limits a sandbox with these settings would get, or the SandboxError naming the bad setting."""
        return self._sandboxes.check(network=network, **settings)

    async def arestore_sandbox(self, snapshot_id: str, *, user: str | None = None, notebook: str | None = None):
        """A started sandbox in the state of ``user``'s snapshot (``burstlab.sandbox.Sandbox.restore``), metered and
        budgeted as those ``asandbox`` makes. Runs on burstlab's loop."""
        user, notebook = user or self.user, notebook or self.notebook
        self.watcher.admit(user=user, notebook=notebook, what="a new sandbox",
                           start_microusd=cost_microusd(1, self.meter.rates.rate("CPU"), 1))
        sb = await self._sandboxes.arestore(snapshot_id, user=user, notebook=notebook)
        self.watcher.start()
        return sb

    def restore_sandbox(self, snapshot_id: str, *, user: str | None = None, notebook: str | None = None):
        """Blocking twin of :meth:`arestore_sandbox`."""
        from burstlab import _sync

        return _sync.run_sync(self.arestore_sandbox(snapshot_id, user=user, notebook=notebook))

    def snapshots(self, user: str | None = None) -> list:
        """``user``'s sandbox snapshots (``burstlab.sandbox.Snapshot``), oldest first."""
        return self._sandboxes.snapshots(user or self.user)

    def delete_snapshot(self, snapshot_id: str, user: str | None = None) -> None:
        self._sandboxes.delete_snapshot(snapshot_id, user or self.user)

    def sandboxes(self, user: str | None = None) -> list[SandboxRecord]:
        """The running sandboxes this workspace holds (``user``'s, or all), each by its one id: the id ``POST
        sandboxes``, MCP and the panel give it, from whichever door it was made (``burstlab.Sandbox()`` included)."""
        return self._sandboxes.records(user)

    def sandbox_id(self, sandbox) -> str:
        """``sandbox``'s id in this workspace's registry (a sandbox it does not hold yet is registered now)."""
        return self._sandboxes.id_of(sandbox)

    def sandbox_record(self, sandbox, state: str = "running", usage: dict | None = None) -> SandboxRecord:
        """``sandbox``'s wire record, under its id here (``usage`` as ``Sandbox.usage()`` gives it; read now if None)."""
        return self._sandboxes.record_of(sandbox, state, usage)

    def get_sandbox(self, sandbox_id: str):
        """The running sandbox of that id, or None."""
        return self._sandboxes.get(sandbox_id)

    def prestart_sandboxes(self) -> None:
        """Start filling the sandbox pool now (returns at once): the first sandbox is then warm too."""
        self._sandboxes.prestart()

    # -- money ----------------------------------------------------------------------------------

    def usage(self, **filters: Any) -> list[UsageRecord]:
        return self.ledger.usage(now_ns=self.meter.clock.now_ns(), **filters)

    def session_usage(self, session) -> UsageRecord | None:
        """The ledger's record of ``session``'s interval, priced up to now (from memory: no query)."""
        return self.meter.record(session.interval_id)

    def utilisation(self, since_ns: int | None = None, until_ns: int | None = None):
        """Per GPU type: leased GPU-seconds / provisioned GPU-seconds in a window (default: the last day)."""
        from burstlab.billing.reports import utilisation

        until_ns = self.meter.clock.now_ns() if until_ns is None else until_ns
        since_ns = until_ns - 86_400 * 10**9 if since_ns is None else since_ns
        records = self.ledger.usage(since_ns=since_ns, until_ns=until_ns, now_ns=until_ns, include_provisioned=True)
        return utilisation(records, since_ns, until_ns)

    def budgets(self, user: str | None = None) -> list[BudgetStatus]:
        """The budgets ``user`` (default: this workspace's) has set, with what is spent against each."""
        return self.watcher.statuses(user or self.user)

    def set_budget(self, scope: str, name: str, limit_usd: float, soft_fraction: float = 0.8, *,
                   user: str | None = None, period: str = "") -> BudgetStatus:
        """Set (or replace) a budget in dollars: ``scope`` is ``"user"`` (``name`` the user) or
        ``"notebook"`` (``name`` the notebook, of ``user``). Warns at ``soft_fraction``; at the limit
        running cells, maps and sandboxes in that scope stop and new ones are refused. ``period``
        (``"day"``, ``"week"``, ``"month"``) counts only what was spent since the period began (UTC).
        Set at or below what is already spent, it stops what runs in its scope at once and says what
        (on stderr, and in ``ws.watcher.last_stops``)."""
        return self.watcher.set(scope, name, limit_usd, soft_fraction, user or (name if scope == "user" else self.user),
                                period)

    def remove_budget(self, scope: str, name: str, *, user: str | None = None) -> bool:
        """Remove a budget; False if there was none."""
        return self.watcher.remove(scope, name, user or (name if scope == "user" else self.user))

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release every session, close every interval, stop the embedded cluster (idempotent)."""
        with self._lock:
            if self._closed:
                return
            sessions = list(self.sessions.values())
        for s in sessions:
            s.stop("workspace closed")
        deadline = time.monotonic() + 5
        for s in sessions:  # let Dask run each lease's done-callback while its executor still takes work
            s.lease_settled.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
        self._wake.set()
        self._sandboxes.close()
        self.watcher.close()
        self.meter.close()
        if self._client is not None:
            try:
                self._client.close(timeout=5)
            except Exception:
                pass
        if self._cluster is not None:
            try:
                from burstlab.remote_kernel._shared import withdraw

                withdraw(self.config.home, self._cluster.scheduler_address)  # no other notebook joins it now
                self._cluster.close(timeout=10)
            except Exception:
                pass
        self.ledger.close()


# The stops this package makes, by the words it gives them (any other stop came from another client).
_ENDED_BY = (("stopped by the user", "user"), ("workspace closed", "closed"), ("released after", "idle"),
             ("stopped from the burstlab panel", "panel"), ("stopped from the JupyterLab panel", "panel"),
             ("Stopped at the limit", "budget"), ("shut down from Jupyter", "closed"),
             ("its environment could not be prepared", "error"), ("its Jupyter kernel could not start", "error"))


def _publish_quietly(client, id: str, record: dict) -> None:
    """Publish a session's ended record; the listing is informational, so a scheduler gone meanwhile is no error
    (its record then simply vanishes, as before)."""
    from burstlab.remote_kernel import registry

    try:
        registry.publish(client, "session", id, record)
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def _close_at_shutdown(ws: Workspace) -> None:
    """Close ``ws`` when the interpreter exits, early enough that it still can.

    ``threading``'s exit hooks run before ``concurrent.futures`` stops its executors and before ``atexit``, where
    ``distributed`` closes its clients and the embedded cluster: a workspace closed later finds its Dask client
    closed (``ClosedClientError``) and its leases' callbacks refused ("cannot schedule new futures after
    interpreter shutdown"). ``close`` is idempotent, so a workspace closed by hand makes the hook a no-op.
    """
    import concurrent.futures.thread  # noqa: F401  its own exit hook first, so that ours runs before it (LIFO)

    try:
        threading._register_atexit(ws.close)  # the hook concurrent.futures itself uses (Python >= 3.9)
    except (AttributeError, RuntimeError):  # RuntimeError: the interpreter is already shutting down
        atexit.register(ws.close)


def no_gpu_message(client=None) -> str:
    """What to do when this workspace has no GPU (declare some, or point at a GPU cluster; on an existing
    cluster, ``client``'s: start `burstlab worker` there)."""
    from burstlab.remote_kernel.lease import no_gpu_message as message  # imports Dask: only when needed

    return message(client)


def _has_pool_plugin(dask_scheduler=None) -> bool:
    return "burstlab-kernel-pool" in dask_scheduler.worker_plugins


_workspace: Workspace | None = None
_workspace_lock = threading.Lock()


def get_workspace(config=None) -> Workspace:
    """The process's workspace, created on first use (with ``config`` if given)."""
    global _workspace
    with _workspace_lock:
        if _workspace is None or _workspace._closed:
            _workspace = Workspace(config=config)
        return _workspace


__all__ = ["Workspace", "default_notebook", "get_workspace", "no_gpu_message"]
