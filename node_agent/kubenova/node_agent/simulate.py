"""`python -m kubenova.node_agent.simulate --hosts N`: N agents in one process, each on its own
simulated host — a libvirt `test:///<file>` connection whose generated host file gives it its
own CPUs, memory and GPUs — with its own Host labels. For the demo and for scale tests. Does
I/O; `host_shape()` and `host_xml()` are pure.

Each `test:///<file>` connection is private to this process: stopping the simulation loses
its domains, as a host's power cut would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from kubenova.api import constants
from kubenova.kube import client, logs
from kubenova.node_agent import config
from kubenova.node_agent.agent import Agent
from kubenova.node_agent.domain_xml import DomainSettings

SHAPES = ((64, 256), (32, 128), (16, 64))
"""(CPUs, GiB) of the simulated hosts, in turn."""
GPU_EVERY = 4
"""Every fourth host has two A100s."""
GPU_SHAPE = (64, 256)
CLASS_LABEL = "kubenova.io/class"
GPU_LABEL = "kubenova.io/gpu-model"


@dataclass(frozen=True)
class HostShape:
    name: str
    cpus: int
    memory_gib: int
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)


def host_shape(prefix: str, index: int, extra_labels: dict[str, str]) -> HostShape:
    gpus = 2 if index % GPU_EVERY == GPU_EVERY - 1 else 0
    cpus, gib = GPU_SHAPE if gpus else SHAPES[index % len(SHAPES)]
    # The example pools (examples/pools.yaml) select on kubenova.io/class and gpu-model.
    kind = {GPU_LABEL: "nvidia-a100", CLASS_LABEL: "gpu"} if gpus else {CLASS_LABEL: "general"}
    labels = {
        constants.LABEL_RACK: f"rack-{'abc'[index % 3]}",
        constants.LABEL_ZONE: f"zone-{index % 2}",
        **kind,
        **extra_labels,
    }
    return HostShape(f"{prefix}-{index}", cpus, gib, gpus, labels)


def host_xml(shape: HostShape) -> str:
    """The libvirt test driver's host file for `shape` (one NUMA node, 2 threads a core)."""
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    cores = max(1, shape.cpus // 2)
    for tag, text in (
        ("mode", "hvm"),
        ("nodes", "1"),
        ("sockets", "1"),
        ("cores", str(cores)),
        ("threads", "2"),
        ("active", str(cores * 2)),
        ("mhz", "2400"),
        ("model", "x86_64"),
    ):
        ET.SubElement(cpu, tag).text = text
    ET.SubElement(node, "memory").text = str(shape.memory_gib * 1024 * 1024)  # KiB
    # The network VMs name by default; the test driver hands out addresses on it.
    net = ET.SubElement(node, "network")
    ET.SubElement(net, "name").text = "default"
    ET.SubElement(net, "bridge", name="virbr0")
    ET.SubElement(net, "forward")
    ip = ET.SubElement(net, "ip", address="192.168.122.1", netmask="255.255.255.0")
    ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start="192.168.122.2", end="192.168.122.254")
    for i in range(shape.gpus):
        dev = ET.SubElement(node, "device")
        ET.SubElement(dev, "name").text = f"pci_0000_{0x3B + i:02x}_00_0"
        ET.SubElement(dev, "parent").text = "computer"
        cap = ET.SubElement(dev, "capability", type="pci")
        ET.SubElement(cap, "class").text = "0x030200"
        for tag, value in (("domain", 0), ("bus", 0x3B + i), ("slot", 0), ("function", 0)):
            ET.SubElement(cap, tag).text = str(value)
        ET.SubElement(cap, "product", id="0x20b0").text = "GA100 [A100 SXM4 40GB]"
        ET.SubElement(cap, "vendor", id="0x10de").text = "NVIDIA Corporation"
        ET.SubElement(cap, "numa", node="0")
    ET.indent(node)
    return ET.tostring(node, encoding="unicode")


def agent_config(shape: HostShape, host_file: Path, args: argparse.Namespace) -> config.AgentConfig:
    return config.AgentConfig(
        host=shape.name,
        namespace=args.namespace,
        libvirt_uri=f"test://{host_file}",
        domains=DomainSettings(domain_type="test", state_dir=str(host_file.parent / shape.name)),
        manage_storage=False,
        labels=shape.labels,
        disk_bytes=2 * 1024**4,
        heartbeat_seconds=args.heartbeat,
        lease_seconds=args.lease,
        report_seconds=args.report,
        resync_seconds=args.resync,
        orphan_grace_seconds=args.orphan_grace,
        workers=args.workers,
    )


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _stats(agents: list[Agent], every: float) -> None:
    last_cpu, last_t = time.process_time(), time.monotonic()
    while True:
        await asyncio.sleep(every)
        cpu, t = time.process_time(), time.monotonic()
        line = {
            "agents": len(agents),
            "cpu_percent": round(100 * (cpu - last_cpu) / (t - last_t), 2),
            "rss_mib": round(_rss_mib(), 1),
            "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "vms": sum(len(a.informer.cache) for a in agents),
        }
        print(json.dumps(line), file=sys.stdout, flush=True)
        last_cpu, last_t = cpu, t


async def _run(args: argparse.Namespace) -> None:
    folder = Path(args.dir or tempfile.mkdtemp(prefix="kubenova-sim-"))
    folder.mkdir(parents=True, exist_ok=True)
    extra = config.parse_labels(args.labels)
    agents: list[Agent] = []
    for i in range(args.hosts):
        shape = host_shape(args.prefix, i, extra)
        host_file = folder / f"{shape.name}.xml"
        host_file.write_text(host_xml(shape))
        agents.append(Agent(agent_config(shape, host_file, args), client.api_client()))
    task = asyncio.current_task()
    assert task is not None, "called from asyncio.run"
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    async with asyncio.TaskGroup() as tg:
        for agent in agents:
            tg.create_task(agent.run())
        if args.stats_every:
            tg.create_task(_stats(agents, args.stats_every))
        if args.duration:
            await asyncio.sleep(args.duration)
            raise asyncio.CancelledError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kubenova.node_agent.simulate", description=__doc__)
    p.add_argument("--hosts", type=int, default=3, help="how many simulated hosts")
    p.add_argument("--prefix", default="sim", help="host names are <prefix>-<n>")
    p.add_argument("--labels", default="", help="extra Host labels for all: k=v,k2=v2")
    p.add_argument("--dir", default="", help="where to write the host files (default: a temp dir)")
    p.add_argument(
        "--namespace", default=os.environ.get("KUBENOVA_NAMESPACE", config.DEFAULT_NAMESPACE)
    )
    p.add_argument("--heartbeat", type=float, default=10.0, help="Lease renewal period, seconds")
    p.add_argument("--lease", type=int, default=40, help="Lease duration, seconds")
    p.add_argument("--report", type=float, default=30.0, help="Host report period, seconds")
    p.add_argument("--resync", type=float, default=60.0, help="full resync period, seconds")
    p.add_argument("--orphan-grace", type=float, default=300.0, help="seconds before removal")
    p.add_argument("--workers", type=int, default=2, help="reconcile workers per agent")
    p.add_argument("--stats-every", type=float, default=0.0, help="print CPU/RSS every N s")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N s (0: run on)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.setup("node-agent-sim")
    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
