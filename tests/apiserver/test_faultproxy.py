"""The fault proxy against the real API server: every fault kind observably happens to a
client pointed at it, the API server's objects show what landed, and a component keeps its
own identity through it."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException

from kubenova.api import constants
from kubenova.dev.faults import Fault, Rule
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.faultproxy import Proxy
from tests.fixtures.operator import Cluster

pytestmark = pytest.mark.apiserver
G, V = constants.GROUP, constants.VERSION
MERGE = "application/merge-patch+json"


@pytest.fixture
def proxy(fault_proxy: Proxy) -> Proxy:
    return fault_proxy


def patch_status(api: Any, ns: str, name: str, host: str) -> Any:
    custom = kubernetes.client.CustomObjectsApi(api)
    return custom.patch_namespaced_custom_object_status(
        G, V, ns, "virtualmachines", name, {"status": {"host": host}}, _content_type=MERGE
    )


def a_vm(kn: Cluster, name: str = "web-1") -> str:
    kn.vm(name, "no-such-flavor", "no-such-pool")  # no webhooks here: any names do
    return name


class TestForwarding:
    def test_without_faults_requests_pass_and_are_counted(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        api = proxy.client()
        a_vm(kn)
        patch_status(api, namespace, "web-1", "h1")
        assert kn.get_vm("web-1")["status"]["host"] == "h1"
        custom: Any = kubernetes.client.CustomObjectsApi(api)
        items = custom.list_namespaced_custom_object(G, V, namespace, "virtualmachines")["items"]
        assert [i["metadata"]["name"] for i in items] == ["web-1"]
        counts = proxy.counts()
        assert counts["requests"] >= 2
        assert sum(n for k, n in counts.items() if k != "requests") == 0

    def test_a_component_keeps_its_certificate_identity(self, proxy: Proxy) -> None:
        api = proxy.client()
        assert whoami(api) == "kubenova-admin"

    def test_a_bearer_token_passes_through(
        self, proxy: Proxy, test_cluster: LocalCluster, namespace: str, tmp_path: Path
    ) -> None:
        test_cluster.kubectl("create", "serviceaccount", "-n", namespace, "agent")
        token = test_cluster.kubectl("create", "token", "-n", namespace, "agent").stdout.strip()
        config = yaml.safe_load(test_cluster.kubeconfig.read_text())
        config["users"] = [{"name": "kubenova-admin", "user": {"token": token}}]
        token_config = tmp_path / "token.kubeconfig"
        token_config.write_text(yaml.safe_dump(config))
        api = proxy.client("agents", token_config)
        assert whoami(api) == f"system:serviceaccount:{namespace}:agent"


def whoami(api: Any) -> str:
    """The user the API server sees (a SelfSubjectReview; the generated client sends it
    without a Content-Type, so it is serialised here)."""
    method, url, headers, body, _ = api.param_serialize(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, headers, body)
    response.read()
    name: str = json.loads(response.data)["status"]["userInfo"]["username"]
    return name


class TestFaults:
    def test_a_dropped_reply_patch_landed_though_the_client_saw_a_reset(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        proxy.rules(
            Rule(
                Fault.DROP_REPLY,
                verbs=frozenset({"patch"}),
                resources=frozenset({"virtualmachines/status"}),
            )
        )
        api = proxy.client()
        a_vm(kn)
        with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
            patch_status(api, namespace, "web-1", "h1")
        assert kn.get_vm("web-1")["status"]["host"] == "h1"  # it landed
        assert proxy.counts()["drop-reply"] == 1

    @pytest.mark.parametrize("fault", [Fault.CONFLICT, Fault.THROTTLE, Fault.INTERNAL_ERROR,
                                       Fault.UNAVAILABLE])  # fmt: skip
    def test_a_status_answer_comes_before_forwarding(
        self, proxy: Proxy, kn: Cluster, namespace: str, fault: Fault
    ) -> None:
        proxy.rules(Rule(fault, verbs=frozenset({"patch"})))
        api = proxy.client()
        a_vm(kn)
        with pytest.raises(ApiException) as e:
            patch_status(api, namespace, "web-1", "h1")
        assert e.value.status == fault.status
        assert "injected by kubenova faultproxy" in (e.value.body or "")
        assert "host" not in kn.get_vm("web-1").get("status", {})  # never reached the server
        assert proxy.counts()[fault.value] == 1

    def test_a_timeout_holds_then_resets_and_nothing_lands(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        proxy.rules(Rule(Fault.TIMEOUT, verbs=frozenset({"patch"}), delay=1.0))
        api = proxy.client()
        a_vm(kn)
        started = time.monotonic()
        with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
            patch_status(api, namespace, "web-1", "h1")
        assert time.monotonic() - started >= 1.0
        assert "host" not in kn.get_vm("web-1").get("status", {})
        assert proxy.counts()["timeout"] == 1

    def test_latency_delays_and_then_forwards(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        proxy.rules(Rule(Fault.LATENCY, verbs=frozenset({"patch"}), delay=1.0))
        api = proxy.client()
        a_vm(kn)
        started = time.monotonic()
        patch_status(api, namespace, "web-1", "h1")
        assert time.monotonic() - started >= 1.0
        assert kn.get_vm("web-1")["status"]["host"] == "h1"
        assert proxy.counts()["latency"] == 1

    def test_a_lagging_watch_delivers_events_late_and_in_order(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        proxy.rules(Rule(Fault.LATENCY, verbs=frozenset({"watch"}), delay=1.5))
        custom = kubernetes.client.CustomObjectsApi(proxy.client())
        a_vm(kn, "a")
        rv = kn.get_vm("a")["metadata"]["resourceVersion"]
        seen: list[tuple[str, float]] = []
        stream = kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
            custom.list_namespaced_custom_object, G, V, namespace, "virtualmachines",
            resource_version=rv, timeout_seconds=20, _request_timeout=30,
        )  # fmt: skip
        created: dict[str, float] = {}
        for name in ("b", "c"):
            created[name] = time.monotonic()
            a_vm(kn, name)
        for event in stream:
            seen.append((event["object"]["metadata"]["name"], time.monotonic()))
            if len(seen) == 2:
                break
        assert [name for name, _ in seen] == ["b", "c"]
        for name, at in seen:
            assert at - created[name] >= 1.4, f"{name} arrived {at - created[name]:.2f} s after"

    def test_a_watch_is_cut_mid_stream(self, proxy: Proxy, kn: Cluster, namespace: str) -> None:
        proxy.rules(Rule(Fault.CUT_WATCH, verbs=frozenset({"watch"}), delay=1.0))
        custom = kubernetes.client.CustomObjectsApi(proxy.client())
        a_vm(kn, "a")
        started = time.monotonic()
        names = []
        with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
            for event in kubernetes.watch.Watch().stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object, G, V, namespace, "virtualmachines",
                timeout_seconds=30, _request_timeout=40,
            ):  # fmt: skip
                names.append(event["object"]["metadata"]["name"])
        assert names == ["a"]  # the stream worked until the cut
        assert 1.0 <= time.monotonic() - started < 20  # long before the server's 30 s
        assert proxy.counts()["cut-watch"] == 1

    def test_refuse_resets_and_refuses_new_connections_for_a_while(self, proxy: Proxy) -> None:
        proxy.rules(Rule(Fault.REFUSE, times=1, delay=2.0))
        api = proxy.client()
        port = proxy.proxy.listeners["operator"].port
        core = kubernetes.client.CoreV1Api(api)
        with pytest.raises((urllib3.exceptions.HTTPError, ConnectionError)):
            core.list_namespace(_preload_content=False, _request_timeout=5)
        refused = wait_for("the listener to refuse connections", lambda: not connects(port), 5)
        assert refused
        wait_for("the listener to accept connections again", lambda: connects(port), 10)
        assert core.list_namespace().items  # and it serves again
        assert proxy.counts()["refuse"] == 1

    def test_rules_target_a_component_by_its_listener(
        self, proxy: Proxy, kn: Cluster, namespace: str
    ) -> None:
        proxy.rules(Rule(Fault.UNAVAILABLE, components=frozenset({"agents"})))
        operator, agents = proxy.client("operator"), proxy.client("agents")
        a_vm(kn)
        patch_status(operator, namespace, "web-1", "h1")
        with pytest.raises(ApiException) as e:
            patch_status(agents, namespace, "web-1", "h2")
        assert e.value.status == 503
        assert kn.get_vm("web-1")["status"]["host"] == "h1"


def connects(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
