"""The simulated hosts' shapes and host files."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kubenova.node_agent import simulate

pytestmark = pytest.mark.unit


def test_hosts_differ_in_size_rack_and_zone_and_every_fourth_has_gpus() -> None:
    shapes = [simulate.host_shape("sim", i, {"team": "a"}) for i in range(8)]
    assert [s.name for s in shapes[:3]] == ["sim-0", "sim-1", "sim-2"]
    assert [(s.cpus, s.memory_gib) for s in shapes[:3]] == list(simulate.SHAPES)
    assert [s.gpus for s in shapes] == [0, 0, 0, 2, 0, 0, 0, 2]
    assert (shapes[3].cpus, shapes[3].memory_gib) == simulate.GPU_SHAPE
    assert {s.labels["kubenova.io/rack"] for s in shapes} == {"rack-a", "rack-b", "rack-c"}
    assert all(s.labels["team"] == "a" for s in shapes)
    assert shapes[3].labels["kubenova.io/gpu-model"] == "nvidia-a100"
    assert {s.labels["kubenova.io/class"] for s in shapes} == {"general", "gpu"}


def test_host_file_has_the_shapes_cpus_memory_and_devices() -> None:
    shape = simulate.HostShape("h", cpus=32, memory_gib=128, gpus=2)
    root = ET.fromstring(simulate.host_xml(shape))
    assert root.findtext("cpu/active") == "32"
    assert int(root.findtext("memory") or 0) == 128 * 1024 * 1024
    assert [d.findtext("name") for d in root.iterfind("device")] == [
        "pci_0000_3b_00_0",
        "pci_0000_3c_00_0",
    ]
