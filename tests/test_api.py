"""The public surface and the direction of dependencies between the components."""

import ast
import pathlib

import burstlab
from burstlab.wire import Execution, ExecutionError, GpuSpec, Output, UsageRecord

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_public_names_are_explicit_and_sorted():
    assert burstlab.__all__ == sorted(burstlab.__all__)
    for name in burstlab.__all__:
        assert hasattr(burstlab, name), name
    assert {"Workspace", "GpuSpec", "Execution", "RemoteError", "CapacityError", "parse_gpu_spec"} <= set(burstlab.__all__)


def test_wire_round_trip():
    ex = Execution(
        outputs=(Output(kind="stream", name="stdout", text="hi\n"), Output(kind="execute_result", data={"text/plain": "2"})),
        error=ExecutionError("ValueError", "bad", ("tb",)), execution_count=3, duration_s=0.5,
    )
    assert Execution.from_json(ex.to_json()) == ex
    assert (ex.stdout, ex.text, ex.results) == ("hi\n", "2", [{"text/plain": "2"}])
    spec = burstlab.parse_gpu_spec("H100:2,A100")
    assert GpuSpec.from_json(spec.to_json()) == spec
    rec = UsageRecord("i", "session", "u", "n", "H100", 1, True, 1, 0, 0, None, 1, 1)
    assert UsageRecord.from_json(rec.to_json()) == rec


# The layers, lowest first. A module may import its own package and any package of a LOWER layer: never a sibling
# of its own layer, never one above (docs/architecture.md draws them). "burstlab" is the core: errors, wire, gpus,
# config, _sync; its __init__ (the facade) loads the upper layers lazily, by name, and is checked on its own below.
LAYERS = [
    {"burstlab"},
    {"billing", "remote_kernel", "sandbox"},
    {"fanout"},
    {"workspace"},
    {"client"},  # speaks only HTTP and the core; the other front doors use it to reach a server
    {"magics", "jupyter_ext", "__main__"},
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}
CORE_MODULES = {"burstlab", "burstlab._default", "burstlab._sync", "burstlab.config", "burstlab.errors", "burstlab.gpus", "burstlab.wire"}
# Front doors use only the workspace and the core; these are the edges that still go round the workspace
# (recorded in docs/architecture.md with their reason). The test fails on any other, and on one that is gone.
FRONT_DOORS = {"magics", "jupyter_ext", "__main__"}
FRONT_DOOR_DEPARTURES = {
    ("__main__", "burstlab.remote_kernel.cluster"),  # `burstlab worker` serves a host's GPUs: no workspace there
    # Sandboxes are not yet owned by the workspace (issue 11, its pool): these doors make their own.
    ("jupyter_ext", "burstlab.sandbox"),
    ("jupyter_ext", "burstlab.sandbox._limits"),
    ("magics", "burstlab.sandbox"),
}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts[0] != "burstlab":
        parts.insert(0, "burstlab")
    return ".".join(parts)


def _all_modules() -> dict[str, pathlib.Path]:
    found = {}
    for folder in {p for layer in LAYERS for p in layer} - {"__main__"}:
        base = ROOT / folder
        for path in base.rglob("*.py"):
            found[_module_name(path)] = path
    return found


MODULES = _all_modules()


def _imports(path: pathlib.Path, *, top_level_only: bool = False):
    """Every module ``path`` imports, resolved (relative imports, ``from pkg import submodule``, burstlab's lazy
    facade names), including imports inside functions unless ``top_level_only``."""
    import burstlab

    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if sub in MODULES:
                    yield sub
                elif module == "burstlab" and alias.name in burstlab._LAZY:
                    yield burstlab._LAZY[alias.name]
                else:
                    yield module


def _package_of(module: str) -> str | None:
    if module == "burstlab.__main__":
        return "__main__"
    if module == "burstlab" or not module.startswith("burstlab."):
        return "burstlab" if module == "burstlab" else None
    second = module.split(".")[1]
    return second if second in RANK else "burstlab"


def _edges():
    for module, path in sorted(MODULES.items()):
        for target in _imports(path):
            if target.startswith("burstlab") and target != module:
                yield module, path, target


def test_the_graph_sees_every_package():
    assert {_package_of(m) for m in MODULES} == {p for layer in LAYERS for p in layer}
    assert ("burstlab.fanout._engine", "burstlab.billing.budgets") in {(m, t) for m, _, t in _edges()}
    assert "burstlab.workspace.workspace" in set(_imports(ROOT / "workspace" / "_usage.py"))  # inside a function


def test_dependencies_flow_down_the_layers():
    """An import of a sibling package of the same layer, or of a layer above, fails: lazy imports too."""
    bad = []
    for module, path, target in _edges():
        if module == "burstlab":
            continue  # the facade: checked below
        mine, theirs = _package_of(module), _package_of(target)
        if theirs is None or mine == theirs:
            continue
        if theirs == "burstlab" and target not in CORE_MODULES:
            bad.append(f"{path.relative_to(ROOT)} imports {target}, which is not in the core")
        elif RANK[theirs] >= RANK[mine]:
            bad.append(f"{path.relative_to(ROOT)} ({mine}) imports {target} ({theirs}), not a lower layer")
    assert not bad, "\n".join(bad)


def test_the_core_imports_only_the_core():
    for module, path, target in _edges():
        if _package_of(module) == "burstlab" and module != "burstlab":
            assert target in CORE_MODULES, f"{path.relative_to(ROOT)} imports {target}"
    # the facade's own top-level imports are the core's; the rest it loads by name, on first use
    for target in _imports(ROOT / "burstlab" / "__init__.py", top_level_only=True):
        assert not target.startswith("burstlab") or target in CORE_MODULES, target
    import subprocess
    import sys

    code = ("import sys, burstlab.errors, burstlab.wire, burstlab.gpus, burstlab.config, burstlab._sync, burstlab._default;"
            "print(sorted(m for m in sys.modules if m.startswith('burstlab')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(eval(loaded)) == CORE_MODULES, loaded


def test_front_doors_use_only_the_workspace_and_the_core():
    seen, bad = set(), []
    for module, path, target in _edges():
        mine, theirs = _package_of(module), _package_of(target)
        if mine not in FRONT_DOORS or theirs in (mine, "burstlab", "workspace", "client"):
            continue
        if (mine, target) in FRONT_DOOR_DEPARTURES:
            seen.add((mine, target))
        else:
            bad.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not bad, "\n".join(bad)
    assert seen == FRONT_DOOR_DEPARTURES, f"departures no longer taken (remove them): {FRONT_DOOR_DEPARTURES - seen}"


def test_no_import_cycles():
    """No two modules import each other, directly or round a loop (imports inside functions count)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, _, target in _edges():
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in MODULES and target != "burstlab" and module != "burstlab":
            graph[module].add(target)
    for module in graph:  # a package's __init__ re-exporting its own modules is not a loop back
        graph[module] = {t for t in graph[module] if not (t != module and module.startswith(t + ".")
                                                          and MODULES[t].name == "__init__.py")}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_client_is_public_and_speaks_only_http():
    import burstlab.client

    assert burstlab.client.__all__ == sorted(burstlab.client.__all__) == ["RemoteFiles", "RemoteSandbox", "Workspace"]
    for module in _imports(ROOT / "client" / "__init__.py"):
        if module.startswith("burstlab"):
            assert module in ("burstlab._sync", "burstlab.errors", "burstlab.wire"), module
