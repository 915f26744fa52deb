"""Workers from a Dask cluster manager: Slurm/PBS (dask-jobqueue), or any ``SpecCluster``.

Configured the way dask-labextension configures its clusters::

    c.BurstLab.cluster = {"module": "dask_jobqueue", "class": "SLURMCluster",
                          "kwargs": {"cores": 4, "memory": "32GB", "queue": "gpu"}}
    c.BurstLab.worker_templates = {"H100": {"max": 4, "kwargs": {"walltime": "04:00:00"}},
                                   "A100": {"max": 2}}

Each GPU type gets ``max`` named workers in the catalogue (``burstlab/h100-0/H100/0/managed`` …), one GPU
each, built from the manager's own worker template (``cluster.new_spec``) with the type's ``kwargs`` on
top and the GPU asked for the manager's way: ``--gres=gpu:1`` in a Slurm job script, ``resources=`` for a
``Nanny``/``Worker`` spec. The same adaptive policy as the embedded cluster (:mod:`.adaptive`, the pure
``decide()``) starts exactly the workers that waiting sessions and maps ask for, from zero, and retires
them when idle. A ``%%gpu`` cell that finds its worker down says which manager it asked.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
from typing import Any

from burstlab.errors import BurstlabError

from .adaptive import CatalogueEntry, SlotAdaptive, check_min_idle, decide, scheduler_demand
from .cluster import NAME_PREFIX, Catalogue, slot_resource

SOURCE = "managed"


def import_keeping_sigint(name: str):
    """Import a cluster manager's module without letting it take Ctrl-C: dask-jobqueue's ``runner`` module
    sets ``SIGINT -> sys.exit()`` when imported, which would turn a notebook's interrupt into SystemExit."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return importlib.import_module(name)
    before = signal.getsignal(signal.SIGINT)
    try:
        return importlib.import_module(name)
    finally:
        if signal.getsignal(signal.SIGINT) is not before:
            signal.signal(signal.SIGINT, before)


def cluster_class(spec: dict) -> type:
    """The cluster manager class named by ``{"module": ..., "class": ...}``."""
    try:
        module = import_keeping_sigint(spec["module"])
        return getattr(module, spec["class"])
    except KeyError as exc:
        raise BurstlabError(f"c.BurstLab.cluster needs 'module' and 'class' (got {sorted(spec)}).") from exc
    except (ImportError, AttributeError) as exc:
        raise BurstlabError(f"c.BurstLab.cluster names {spec.get('module')}.{spec.get('class')}, which cannot be "
                            f"imported ({exc}). Install its package (e.g. pip install dask-jobqueue).") from exc


def _is_job(cls: Any) -> bool:
    """A dask-jobqueue Job class (a batch job that runs a worker), rather than a Nanny/Worker."""
    return "dask_jobqueue" in getattr(cls, "__module__", "") and hasattr(cls, "job_script")


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = out[key] + list(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def host_label(gpu_type: str, i: int) -> str:
    return f"{gpu_type.lower()}-{i}"


def worker_options(new_spec: dict, gpu_type: str, i: int, template: dict) -> tuple[str, dict]:
    """Name and spec of the ``i``-th managed worker of ``gpu_type``: the manager's template, the type's
    kwargs, and the GPU asked for (Slurm: ``--gres=gpu:1``; any worker: the burstlab resources)."""
    host = host_label(gpu_type, i)
    name = f"{NAME_PREFIX}/{host}/{gpu_type}/0/{SOURCE}"
    resources = {gpu_type: 1, slot_resource(host, 0): 1, **(template.get("resources") or {})}
    cls = new_spec["cls"]
    options = _merge(new_spec.get("options", {}), template.get("kwargs") or {})
    options["name"] = name
    if _is_job(cls):
        arg = ",".join(f"{k}={v:g}" for k, v in resources.items())
        options["worker_extra_args"] = [*options.get("worker_extra_args", []), "--resources", arg]
        options["job_script_prologue"] = [*options.get("job_script_prologue", []),
                                          f"export BURSTLAB_GPU_TYPE={gpu_type} BURSTLAB_GPU_SOURCE={SOURCE}"]
        directives = options.get("job_extra_directives", [])
        if "slurm" in cls.__module__ and not any("gres" in d or "gpus" in d for d in directives):
            options["job_extra_directives"] = [*directives, "--gres=gpu:1"]
    else:
        options["resources"] = {**(options.get("resources") or {}), **resources}
        options["env"] = {**(options.get("env") or {}), "BURSTLAB_GPU_TYPE": gpu_type, "BURSTLAB_GPU_SOURCE": SOURCE}
    return name, {"cls": cls, "options": options}


def catalogue(new_spec: dict, templates: dict[str, dict]) -> dict[str, dict]:
    """Every managed worker the manager may start: ``max`` (default 1) per GPU type."""
    if not new_spec or "cls" not in new_spec:
        raise BurstlabError("The configured cluster manager has no worker template (cluster.new_spec): "
                            "burstlab scales SpecCluster-based managers (dask-jobqueue, distributed.SpecCluster).")
    out = {}
    for gpu_type, template in sorted(templates.items()):
        for i in range(int(template.get("max", 1))):
            name, spec = worker_options(new_spec, gpu_type, i, template)
            out[name] = spec
    return out


def resources_of(spec: dict) -> dict[str, float]:
    """What a managed worker will carry, whichever way its spec passes it on."""
    options = spec["options"]
    if "resources" in options:
        return dict(options["resources"])
    args = options.get("worker_extra_args", [])
    i = len(args) - 1 - args[::-1].index("--resources")
    return {k: float(v) for k, v in (item.split("=") for item in args[i + 1].split(","))}


class ManagedAdaptive(SlotAdaptive):
    """The embedded cluster's adaptive policy over a manager's workers, whose resources are known up front."""

    def __init__(self, cluster, catalogue: dict[str, dict], carries: dict[str, dict], **kwargs):
        self.carries = carries
        super().__init__(cluster, catalogue, **kwargs)

    async def target(self) -> int:
        demand, running = scheduler_demand(self.cluster.scheduler)
        self._desired = decide([CatalogueEntry(n, r) for n, r in self.carries.items()], demand, running,
                               self.min_idle)
        return len(self._desired)


def start_managed(spec: dict, templates: dict[str, dict], *, idle_timeout: float = 60.0, interval: float = 0.5,
                  security=None, min_idle: dict[str, int] | None = None):
    """Start the configured cluster manager with no workers, and burstlab's adaptive policy over it."""
    if not templates:
        raise BurstlabError("c.BurstLab.cluster is set but c.BurstLab.worker_templates is empty: name the GPU "
                            "types it can start, e.g. {'H100': {'max': 2}}.")
    cls = cluster_class(spec)
    kwargs = dict(spec.get("kwargs") or {})
    if security is not None and "security" in inspect.signature(cls).parameters:
        kwargs.setdefault("security", security)
    cluster = cls(**kwargs)
    try:
        entries = catalogue(cluster.new_spec, templates)
        carries = {name: resources_of(spec) for name, spec in entries.items()}
        cluster.scheduler.add_plugin(Catalogue({n: {"options": {"resources": r}} for n, r in carries.items()}))
        check_min_idle(min_idle, carries)
        cluster._adaptive = ManagedAdaptive(cluster, entries, carries, min_idle=min_idle, interval=interval,
                                            wait_count=max(1, math.ceil(idle_timeout / interval)))
    except BaseException:
        cluster.close()
        raise
    return cluster


TLS_DIR = "/etc/burstlab/tls"  # where the Kubernetes secret with the cluster's certificates is mounted


def _tls_env(tls_dir: str = TLS_DIR) -> dict[str, str]:
    """Dask's TLS settings as variables, for certificates mounted at ``tls_dir`` (ca.pem, node.pem, node-key.pem)."""
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{tls_dir}/ca.pem"}
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = f"{tls_dir}/node.pem"
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = f"{tls_dir}/node-key.pem"
    return env


def _mount_tls(pod: dict, secret: str, tls_dir: str = TLS_DIR) -> None:
    pod.setdefault("volumes", []).append({"name": "burstlab-tls", "secret": {"secretName": secret,
                                                                             "defaultMode": 0o400}})
    for container in pod["containers"]:
        container.setdefault("volumeMounts", []).append({"name": "burstlab-tls", "mountPath": tls_dir,
                                                         "readOnly": True})


def kubernetes_spec(name: str, templates: dict[str, dict], *, image: str, tls_secret: str,
                    namespace: str = "default", nthreads: int = 2) -> dict:
    """What burstlab hands dask-kubernetes' operator: a ``DaskCluster`` (TLS scheduler, no default workers)
    and one ``DaskWorkerGroup`` per GPU type, whose pods ask for ``nvidia.com/gpu`` and run ``burstlab
    worker`` (which serves the pod's GPUs through NVML) against the scheduler over TLS, with the cluster's
    certificates from the Kubernetes secret ``tls_secret`` (files ca.pem, node.pem, node-key.pem).

    ``templates``: ``{"H100": {"gpus": 1, "max": 4, "node_selector": {...}, "resources": {...}}}``.
    Returns ``{"cluster": DaskCluster, "worker_groups": {type: DaskWorkerGroup}}``, plain dicts for
    ``KubeCluster(custom_cluster_spec=...)`` and ``kubectl apply``.
    """
    from dask_kubernetes.operator import make_cluster_spec, make_worker_spec

    env = _tls_env()
    address = f"tls://{name}-scheduler.{namespace}.svc.cluster.local:8786"
    cluster = make_cluster_spec(name, image=image, n_workers=0, env=env)
    scheduler_pod = cluster["spec"]["scheduler"]["spec"]
    scheduler_pod["containers"][0]["args"] = ["dask", "scheduler", "--protocol", "tls", "--host", "0.0.0.0",
                                              "--port", "8786"]
    _mount_tls(scheduler_pod, tls_secret)
    worker_env = {**env, "DASK_SCHEDULER_ADDRESS": address}  # the operator's own default is tcp://

    def worker(gpu_type: str, template: dict, replicas: int) -> dict:
        gpus = int(template.get("gpus", 1))
        limits = {"nvidia.com/gpu": gpus, **(template.get("resources") or {})}
        spec = make_worker_spec(image=image, n_workers=replicas, env=worker_env,
                                resources={"limits": limits, "requests": dict(limits)})
        pod = spec["spec"]
        container = pod["containers"][0]
        # The operator appends Dask's --name/--dashboard options; `burstlab worker` names its workers itself.
        container["args"] = ["burstlab", "worker", "$(DASK_SCHEDULER_ADDRESS)", "--nthreads", str(nthreads)]
        if template.get("node_selector"):
            pod["nodeSelector"] = dict(template["node_selector"])
        _mount_tls(pod, tls_secret)
        return spec

    first = sorted(templates)[0] if templates else "GPU"
    cluster["spec"]["worker"] = worker(first, templates.get(first, {}), 0)  # the default group: none
    groups = {}
    for gpu_type, template in sorted(templates.items()):
        groups[gpu_type] = {
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup",
            "metadata": {"name": f"{name}-{gpu_type.lower()}", "namespace": namespace},
            "spec": {"cluster": name, "worker": worker(gpu_type, template, 0)},
        }
    return {"cluster": cluster, "worker_groups": groups}


def describe(cluster) -> str:
    """How a message names the manager: its class."""
    return type(cluster).__name__


__all__ = ["ManagedAdaptive", "catalogue", "cluster_class", "describe", "kubernetes_spec", "resources_of",
           "start_managed", "worker_options"]
