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


# Each component may import only these others (billing is a leaf; front doors sit on top).
ALLOWED = {
    "billing": set(),
    "remote_kernel": {"billing"},
    "sandbox": {"billing", "remote_kernel"},
    "fanout": {"billing", "remote_kernel"},
    "magics": {"billing", "remote_kernel", "sandbox", "fanout"},
    "jupyter_ext": {"billing", "remote_kernel", "sandbox", "fanout"},
}
COMPONENT_OF = {"burstlab.billing": "billing", "burstlab.remote_kernel": "remote_kernel", "burstlab.sandbox": "sandbox",
                "burstlab.fanout": "fanout", "burstlab.magics": "magics", "burstlab.jupyter_ext": "jupyter_ext"}


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_dependencies_flow_one_way():
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            for module in _imports(path):
                for prefix, component in COMPONENT_OF.items():
                    if (module == prefix or module.startswith(prefix + ".")) and component != folder and component not in allowed:
                        bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, bad


def test_billing_imports_only_the_core():
    for path in (ROOT / "billing").rglob("*.py"):
        for module in _imports(path):
            if module.startswith("burstlab"):
                assert module in ("burstlab.errors", "burstlab.wire") or module.startswith("burstlab.billing"), (path, module)


def test_client_is_public_and_speaks_only_http():
    import burstlab.client

    assert burstlab.client.__all__ == sorted(burstlab.client.__all__) == ["RemoteFiles", "RemoteSandbox", "Workspace"]
    for module in _imports(ROOT / "client" / "__init__.py"):
        if module.startswith("burstlab"):
            assert module in ("burstlab._sync", "burstlab.errors", "burstlab.wire"), module
