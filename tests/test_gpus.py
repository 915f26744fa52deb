import pytest

from burstlab.errors import ConfigError, GpuSpecError
from burstlab.gpus import discover, normalise_type, nvml_gpus, parse_declared, parse_gpu_spec
from burstlab.wire import GpuRequest, GpuSpec


@pytest.mark.parametrize(
    "name, expected",
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H100 PCIe", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("Tesla T4", "T4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA H200", "H200"),
        ("h100", "H100"),
    ],
)
def test_normalise_nvml_names(name, expected):
    assert normalise_type(name) == expected


@pytest.mark.parametrize(
    "spec, choices",
    [
        ("H100", [("H100", 1)]),
        ("h100", [("H100", 1)]),
        ("H100:2", [("H100", 2)]),
        ("H100,A100", [("H100", 1), ("A100", 1)]),
        (" h100:2 , a100 ", [("H100", 2), ("A100", 1)]),
        (["H100", "A100:4"], [("H100", 1), ("A100", 4)]),
    ],
)
def test_parse_valid_forms(spec, choices):
    parsed = parse_gpu_spec(spec)
    assert parsed == GpuSpec(tuple(GpuRequest(t, c) for t, c in choices))
    assert parse_gpu_spec(str(parsed)) == parsed  # str() is a valid spec again


@pytest.mark.parametrize("spec", ["", "H100:0", "H100:x", "H 100", ":2", 42, ["H100", 3], "H100:-1"])
def test_parse_invalid_forms_name_the_valid_ones(spec):
    with pytest.raises(GpuSpecError, match="Valid forms"):
        parse_gpu_spec(spec)


def test_parse_against_available_types_lists_them():
    with pytest.raises(GpuSpecError, match=r"it has: A100, H100"):
        parse_gpu_spec("B200", available=["H100", "A100"])
    assert parse_gpu_spec("B200,H100", available=["H100"]).choices[1].type == "H100"


def test_declared_gpus():
    assert parse_declared("H100:2,A100:1,h100") == {"H100": 3, "A100": 1}
    with pytest.raises(ConfigError, match="TYPE:COUNT"):
        parse_declared("H100:two")


def test_discover_declared_when_nvml_finds_none():
    if nvml_gpus():
        pytest.skip("this machine has real GPUs; declared ones are ignored here (covered by the gpu test)")
    gpus = discover("H100:2,A100:1", host="h")
    assert [(g.type, g.index, g.source) for g in gpus] == [("H100", 0, "declared"), ("H100", 1, "declared"), ("A100", 2, "declared")]
    assert discover("", host="h") == []


@pytest.mark.gpu
def test_nvml_discovery_on_real_gpu():
    pytest.importorskip("pynvml")
    gpus = nvml_gpus()
    if not gpus:
        pytest.skip("needs an NVIDIA GPU visible to NVML (none on this machine)")
    assert all(g.source == "nvml" and g.uuid.startswith("GPU-") for g in gpus)
    assert discover("H100:8") == gpus  # NVML wins over declarations
