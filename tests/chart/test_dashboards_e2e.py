"""The dashboards against real data: Debian's Prometheus scrapes real operator replicas,
agents (libvirt's test driver) and the admission server during a small workload, and every
query of every dashboard panel returns data through Prometheus' HTTP API."""

from __future__ import annotations

import functools
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenova.api import constants
from kubenova.dev import cluster, dashboards, pki
from kubenova.node_agent import simulate
from kubenova.webhooks import registration
from tests.e2e.bind import flavor_yaml, phase, vm, vm_yaml
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.imageserver import ImageServer, qcow2
from tests.fixtures.libvirt import Agents, unique_host
from tests.fixtures.operator import Operators
from tests.fixtures.webhook import Process
from tests.unit.chart import promql

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.apiserver, pytest.mark.libvirt]

SCOPE_LABEL = "kubenova.io/metrics-e2e"
# Grafana's $__rate_interval is at least four scrape intervals; Prometheus scrapes every 1 s.
RATE_INTERVAL = "15s"
# Few create tokens, so a burst of creates is refused with RateLimited.
CREATE_LIMIT = "--namespace-creates=0.1/6"


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as r:
            return json.loads(r.read())

    def query(self, expr: str) -> list[Any]:
        reply = self.get("/api/v1/query", query=expr)
        assert reply["status"] == "success", reply
        result: list[Any] = reply["data"]["result"]
        return result

    def targets_up(self) -> bool:
        targets = self.get("/api/v1/targets")["data"]["activeTargets"]
        return bool(targets) and all(t["health"] == "up" for t in targets)


@pytest.fixture
def prometheus_binary() -> Path:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("prometheus is not installed: run hack/setup (Debian package prometheus)")
    return Path(found)


@dataclass
class AdmissionServer:
    """The admission server as a process, registered by URL for the test's namespace only."""

    process: Process
    port: int
    ca: pki.CertificateAuthority
    name: str

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca.cert_path))

    def healthy(self) -> bool:
        url = f"https://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1, context=self.context()) as r:
                return int(r.status) == 200
        except OSError:
            return False


@pytest.fixture
def admission(
    test_cluster: LocalCluster, namespace: str, tmp_path: Path
) -> Iterator[AdmissionServer]:
    folder = tmp_path / "admission"
    folder.mkdir()
    ca = pki.CertificateAuthority(folder / "pki", name="kubenova-metrics-e2e-ca")
    pair = ca.issue("webhook", "kubenova-webhook", hosts=("127.0.0.1", "localhost"))
    port = cluster.free_port()
    process = Process(
        "kubenova.webhooks",
        [
            "--host=127.0.0.1",
            f"--port={port}",
            f"--cert={pair.cert}",
            f"--key={pair.key}",
            f"--kubeconfig={test_cluster.kubeconfig}",
            CREATE_LIMIT,
        ],
        folder / "webhook.log",
        dict(os.environ, KUBECONFIG=str(test_cluster.kubeconfig)),
    )
    server = AdmissionServer(process, port, ca, f"kubenova-metrics-{namespace}")
    process.start()
    try:
        wait_for("the admission server's /healthz", server.healthy)
        test_cluster.kubectl("label", "namespace", namespace, f"{SCOPE_LABEL}=true")
        endpoint = registration.Endpoint(ca_bundle=ca.pem, url=f"https://127.0.0.1:{port}")
        configs = registration.configurations(
            endpoint, name=server.name, namespace_selector={"matchLabels": {SCOPE_LABEL: "true"}}
        )
        test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(configs))
        yield server
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            test_cluster.kubectl("delete", kind, server.name, "--ignore-not-found")
        process.stop()


@dataclass(frozen=True)
class Catalog:
    small: str
    huge: str
    pool: str


@pytest.fixture
def catalog(test_cluster: LocalCluster, namespace: str) -> Iterator[Catalog]:
    """Two flavors (one fits nowhere) and a pool of the test's hosts; removed after the VMs
    (requested before the fixtures that start components, so it is torn down after them)."""
    names = Catalog(f"{namespace}-small", f"{namespace}-huge", f"{namespace}-pool")
    pool = {
        "apiVersion": constants.API_VERSION,
        "kind": "ResourcePool",
        "metadata": {"name": names.pool},
        "spec": {"hostSelector": {"matchLabels": {"metrics-e2e": namespace}}},
    }
    manifests = [flavor_yaml(names.small), flavor_yaml(names.huge, vcpus=512), json.dumps(pool)]
    for manifest in manifests:
        test_cluster.kubectl("apply", "-f", "-", input=manifest)
    yield names
    test_cluster.kubectl("delete", "resourcepool", names.pool, "--ignore-not-found")
    test_cluster.kubectl(
        "delete", "flavor", names.small, names.huge, "--ignore-not-found", "--wait=false"
    )


def _start_prometheus(
    binary: Path, folder: Path, jobs: dict[str, list[int]], admission: AdmissionServer
) -> Prometheus:
    port = cluster.free_port()
    scrape: list[dict[str, Any]] = [
        {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}]}
        for job, ports in jobs.items()
    ]
    scrape.append(
        {
            "job_name": "webhooks",
            "scheme": "https",
            "tls_config": {"ca_file": str(admission.ca.cert_path)},
            "static_configs": [{"targets": [f"127.0.0.1:{admission.port}"]}],
        }
    )
    config = {"global": {"scrape_interval": "1s"}, "scrape_configs": scrape}
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    with (folder / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Prometheus(f"http://127.0.0.1:{port}", proc)


def _ready(prom: Prometheus) -> bool:
    try:
        with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as r:
            return int(r.status) == 200
    except OSError:
        return False


def _running(test_cluster: LocalCluster, namespace: str, name: str) -> bool:
    return phase(test_cluster, namespace, name) == "Running"


def _create(test_cluster: LocalCluster, manifest: str) -> subprocess.CompletedProcess[str]:
    return test_cluster.kubectl("create", "-f", "-", input=manifest, check=False)


def _scrape(url: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(url, timeout=5, context=context) as r:
        return str(r.read().decode())


def test_every_dashboard_query_returns_data_from_the_real_components(
    test_cluster: LocalCluster,
    namespace: str,
    catalog: Catalog,
    operators: Operators,
    agents: Agents,
    admission: AdmissionServer,
    prometheus_binary: Path,
    image_server: ImageServer,
    tmp_path: Path,
) -> None:
    ns = namespace
    # Two simulated hosts in a pool of their own; two operator replicas, one leads.
    agent_ports, hosts = [], []
    for i in range(2):
        host = unique_host()
        hosts.append(host)
        shape = simulate.HostShape(host, cpus=16, memory_gib=64)
        (tmp_path / f"{host}.xml").write_text(simulate.host_xml(shape))
        agent_ports.append(cluster.free_port())
        agents.start(
            host, f"test://{tmp_path / f'{host}.xml'}",
            KUBENOVA_HOST_LABELS=f"metrics-e2e={ns}", KUBENOVA_HOST_DISK="1Ti",
            KUBENOVA_METRICS_PORT=str(agent_ports[i]), KUBENOVA_ORPHAN_GRACE_SECONDS="1",
        )  # fmt: skip
    # A third host, in a pool of its own, with an image cache: the pool pre-caches one good
    # VMImage and one whose checksum is wrong (an import, a failure, a cache that holds one).
    image_host, image_pool = unique_host("img"), f"{ns}-images"
    url, sha = image_server.add("/dash.qcow2", qcow2(tmp_path / "dash.qcow2"))
    images = {f"{ns}-good": sha, f"{ns}-bad": "0" * 64}
    test_cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": constants.API_VERSION, "kind": "ResourcePool",
        "metadata": {"name": image_pool},
        "spec": {"hostSelector": {"matchLabels": {"metrics-e2e-images": ns}}},
    }))  # fmt: skip
    for name, checksum in images.items():
        test_cluster.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": constants.API_VERSION, "kind": "VMImage", "metadata": {"name": name},
            "spec": {"url": url, "sha256": checksum, "preCache": {"pools": [image_pool]}},
        }))  # fmt: skip
    (tmp_path / "images").mkdir()
    (tmp_path / f"{image_host}.xml").write_text(
        simulate.host_xml(simulate.HostShape(image_host, cpus=4, memory_gib=8))
    )
    agent_ports.append(cluster.free_port())
    agents.start(
        image_host, f"test://{tmp_path / f'{image_host}.xml'}",
        KUBENOVA_HOST_LABELS=f"metrics-e2e-images={ns}", KUBENOVA_STORAGE="files",
        KUBENOVA_IMAGE_DIR=str(tmp_path / "images"), KUBENOVA_METRICS_PORT=str(agent_ports[-1]),
    )  # fmt: skip
    replicas = [operators.start(f"op-{i}") for i in (1, 2)]
    prom = _start_prometheus(
        prometheus_binary,
        tmp_path,
        {"operator": [r.metrics_port for r in replicas], "agent": agent_ports},
        admission,
    )
    try:
        wait_for("Prometheus ready", lambda: _ready(prom))
        wait_for("every scrape target up", prom.targets_up, timeout=60)

        small, huge, pool = catalog.small, catalog.huge, catalog.pool
        # The workload: VMs that run, one that fits nowhere, one the webhook refuses, a burst
        # the rate limit refuses, and one moved to another host (an orphan domain).
        names = [f"vm-{i}" for i in range(4)]
        for name in names:
            assert _create(test_cluster, vm_yaml(name, ns, small, pool=pool)).returncode == 0
        assert _create(test_cluster, vm_yaml("too-big", ns, huge, pool=pool)).returncode == 0
        refused = _create(test_cluster, vm_yaml("no-flavor", ns, f"{ns}-missing"))
        assert refused.returncode != 0, "a VM of a missing flavor is refused"
        burst = [_create(test_cluster, vm_yaml(f"burst-{i}", ns, small)) for i in range(3)]
        assert any(constants.REASON_RATE_LIMITED in p.stderr for p in burst), [
            p.stderr for p in burst
        ]
        for name in names:
            wait_for(f"{name} Running", functools.partial(_running, test_cluster, ns, name), 60)
        # Moved to the other host (as after a failover), the VM leaves its first agent's watch:
        # the domain left there is an orphan, removed after the grace period.
        moved = vm(test_cluster, ns, names[0])
        assert moved is not None
        other = next(h for h in hosts if h != moved["status"]["host"])
        test_cluster.kubectl(
            "patch", "vm", names[0], "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"host": other, "phase": "Scheduled"}}),
        )  # fmt: skip

        # The JSON the chart ships (tests/unit/chart keeps it equal to the generator's output).
        queries = [
            (path.stem, title, expr.replace("$__rate_interval", RATE_INTERVAL))
            for path in sorted(dashboards.DASHBOARD_DIR.glob("*.json"))
            for title, expr in promql.panel_queries(promql.load(path))
        ]
        assert len(queries) >= len(dashboards.DASHBOARDS) * 4

        def empty() -> list[str]:
            return [
                f"{board} / {title}: {expr}"
                for board, title, expr in queries
                if not prom.query(expr)
            ]

        # Rates need a few scrapes after the workload: poll until every query answers.
        deadline = time.monotonic() + 90
        while (missing := empty()) and time.monotonic() < deadline:
            time.sleep(1)
        assert missing == [], "queries without data:\n" + "\n".join(missing)

        # promtool lints what each component exposes.
        pages = [_scrape(f"http://127.0.0.1:{p}/metrics") for p in agent_ports]
        pages += [_scrape(f"http://127.0.0.1:{r.metrics_port}/metrics") for r in replicas]
        pages.append(_scrape(f"https://127.0.0.1:{admission.port}/metrics", admission.context()))
        for page in pages:
            lint = subprocess.run(
                ["promtool", "check", "metrics"], input=page, capture_output=True, text=True
            )
            assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    finally:
        prom.proc.terminate()
        prom.proc.wait(15)
        test_cluster.kubectl("delete", "vmimages.kubenova.io", *images, "--wait=false")
        test_cluster.kubectl("delete", "resourcepool", image_pool, "--wait=false")
