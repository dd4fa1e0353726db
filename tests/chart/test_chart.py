"""The Helm chart: lint, render, check against the real API server, install, upgrade,
uninstall; and that what it installs confines each component to what it needs."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from kubenova.api.constants import API_VERSION
from kubenova.dev import dashboards
from kubenova.webhooks import registration
from tests.chart.helm import CHART, CUSTOM_VALUES, KUBE_VERSION, Helm, by_kind, one
from tests.fixtures.cluster import LocalCluster, wait_for
from tests.fixtures.identities import Client, in_force, service_account_token, token_client

pytestmark = pytest.mark.apiserver

TENANT = "tenant-ana"
DRAIN = "kubenova.io/drain"


def _stub_crd(group: str, kind: str, plural: str) -> dict[str, Any]:
    """Just enough of a third-party CRD for the API server to accept objects of its kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


FOREIGN_CRDS = [
    _stub_crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    _stub_crd("cert-manager.io", "Certificate", "certificates"),
    _stub_crd("cert-manager.io", "Issuer", "issuers"),
]


@pytest.fixture(scope="module")
def foreign_crds(test_cluster: LocalCluster) -> Iterator[None]:
    """Prometheus Operator's and cert-manager's kinds, which the optional parts create."""
    manifest = yaml.safe_dump_all(FOREIGN_CRDS)
    test_cluster.kubectl("apply", "-f", "-", input=manifest)
    test_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", "-", input=manifest
    )
    yield
    test_cluster.kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest)


def _openssl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True)


def _pem(data: dict[str, str], key: str) -> str:
    return base64.b64decode(data[key]).decode()


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_lint_is_clean(helm: Helm, custom: bool) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", "1.34.3"]
    if custom:
        args += ["-f", str(helm.values_file(CUSTOM_VALUES, "lint.yaml"))]
    out = helm.run(*args).stdout
    assert "0 chart(s) failed" in out, out


def test_schema_refuses_unknown_keys_and_a_single_webhook(helm: Helm) -> None:
    for values, error in (
        ({"operator": {"replics": 3}}, "additional properties 'replics' not allowed"),
        ({"webhooks": {"replicas": 1}}, "/webhooks/replicas"),
        ({"agent": {"storage": "nfs"}}, "/agent/storage"),
        ({"agent": {"hostDisk": "4 TB; rm"}}, "/agent/hostDisk"),
    ):
        path = helm.values_file(values, "bad.yaml")
        proc = helm.run("template", "x", str(CHART), "-f", str(path), check=False)
        assert proc.returncode != 0 and error in proc.stderr, (values, proc.stderr)


def test_defaults_render_every_component_as_the_issue_asks(helm: Helm) -> None:
    docs = helm.template("kubenova", "kubenova-system")

    operator = one(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 3
    pod = operator["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["KUBENOVA_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    agent = one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]
    container = agent["containers"][0]
    assert container["securityContext"]["privileged"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    host_paths = {v["hostPath"]["path"] for v in agent["volumes"] if "hostPath" in v}
    assert host_paths >= {"/var/run/libvirt"}
    assert agent["nodeSelector"] == {"kubenova.io/hypervisor": "true"}
    assert agent["tolerations"]

    webhooks = one(docs, "Deployment", "-webhooks")
    assert webhooks["spec"]["replicas"] >= 2
    assert webhooks["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    args = webhooks["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--quota-reservation")], "exact by default"
    pdb = one(docs, "PodDisruptionBudget", "-webhooks")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == webhooks["spec"]["selector"]["matchLabels"]

    configs = by_kind(docs, "MutatingWebhookConfiguration") + by_kind(
        docs, "ValidatingWebhookConfiguration"
    )
    hooks = [w for c in configs for w in c["webhooks"]]
    assert len(configs) == 2 and hooks
    assert {w["failurePolicy"] for w in hooks} == {"Fail"}

    secret = one(docs, "Secret", "-webhooks-tls")["data"]
    assert {w["clientConfig"]["caBundle"] for w in hooks} == {secret["ca.crt"]}
    assert not by_kind(docs, "ServiceMonitor") and not by_kind(docs, "Certificate")

    maps = [d for d in by_kind(docs, "ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
    assert len(maps) == len(dashboards.DASHBOARDS)
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((filename, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((dashboards.DASHBOARD_DIR / filename).read_text())


def test_generated_certificate_is_signed_by_the_bundle_and_names_the_service(
    helm: Helm, tmp_path: Path
) -> None:
    docs = helm.template("kn", "infra")
    data = one(docs, "Secret", "-webhooks-tls")["data"]
    (tmp_path / "ca.pem").write_text(_pem(data, "ca.crt"))
    (tmp_path / "tls.pem").write_text(_pem(data, "tls.crt"))
    verify = _openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / "tls.pem"))
    assert verify.returncode == 0, verify.stderr
    sans = _openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.pem"))
    assert "DNS:kn-kubenova-webhooks.infra.svc" in sans.stdout, sans.stdout


def test_webhook_configurations_match_the_admission_servers_registration(helm: Helm) -> None:
    """The chart routes exactly what kubenova.webhooks.registration routes in tests."""
    docs = helm.template("kubenova", "kubenova-system")
    endpoint = registration.Endpoint(
        ca_bundle=b"-", service_namespace="kubenova-system", service_name="kubenova-webhooks"
    )

    def comparable(doc: dict[str, Any]) -> dict[str, Any]:
        hooks = [
            dict(w, clientConfig=dict(w["clientConfig"], caBundle="-")) for w in doc["webhooks"]
        ]
        return {"kind": doc["kind"], "name": doc["metadata"]["name"], "webhooks": hooks}

    expected = [comparable(d) for d in registration.configurations(endpoint)]
    rendered = [
        comparable(one(docs, kind))
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    ]
    assert rendered == expected


def test_custom_values_reach_the_objects(helm: Helm) -> None:
    docs = helm.template("kn", "infra", CUSTOM_VALUES)
    operator = one(docs, "Deployment", "-operator")
    assert operator["spec"]["replicas"] == 5
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/kubenova:1.2.3"
    assert "--metrics-port=9090" in container["args"]

    agent = one(docs, "DaemonSet", "-agent")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in agent["containers"][0]["env"]}
    assert env["LIBVIRT_URI"] == "test:///default" and env["KUBENOVA_STORAGE"] == "none"
    assert env["KUBENOVA_HOST_LABELS"] == "rack=r1,zone=a"
    assert env["KUBENOVA_HOST_DISK"] == "4Ti"

    webhooks = one(docs, "Deployment", "-webhooks")["spec"]["template"]["spec"]
    assert [c["name"] for c in webhooks["containers"]] == ["webhooks"]
    args = webhooks["containers"][0]["args"]
    assert "--namespace-creates=10/20" in args and "--cluster-updates=off" in args
    assert "--log-level=debug" in args
    assert "--quota-reservation=16" in args

    # cert-manager issues the certificate and injects the CA; the chart generates none (the
    # console's PKI stays the chart's own: a CA that signs console certificates only).
    assert [s["metadata"]["name"] for s in by_kind(docs, "Secret")] == [
        "kn-kubenova-console-server-tls",
        "kn-kubenova-console-agent-tls",
    ]
    assert one(docs, "Certificate", "-webhooks")["spec"]["secretName"] == "kn-kubenova-webhooks-tls"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        config = one(docs, kind)
        annotation = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert annotation == "infra/kn-kubenova-webhooks"
        assert all("caBundle" not in w["clientConfig"] for w in config["webhooks"])

    levels = {f["metadata"]["name"]: f["spec"]["priorityLevelConfiguration"]["name"]
              for f in by_kind(docs, "FlowSchema")}  # fmt: skip
    assert levels == {
        "kn-kubenova-leader-election": "leader-election",
        "kn-kubenova-agents": "system",
        "kn-kubenova-controllers": "workload-high",
    }

    monitors = by_kind(docs, "ServiceMonitor")
    assert len(monitors) == 3
    assert all(m["metadata"]["labels"]["release"] == "prometheus" for m in monitors)


def test_flow_control_can_be_left_to_the_cluster(helm: Helm) -> None:
    assert by_kind(helm.template("kn", "infra"), "FlowSchema")
    off = helm.template("kn", "infra", {"flowControl": {"enabled": False}})
    assert not by_kind(off, "FlowSchema")
    bad = helm.values_file({"flowControl": {"priorityLevels": {"agents": "Node High"}}}, "bad.yaml")
    proc = helm.run("template", "x", str(CHART), "-f", str(bad), "--kube-version", KUBE_VERSION,
                    check=False)  # fmt: skip
    assert proc.returncode != 0 and "/flowControl/priorityLevels/agents" in proc.stderr, proc.stderr


@pytest.mark.parametrize("custom", [False, True], ids=["default", "custom"])
def test_rendered_chart_passes_a_server_side_dry_run(
    helm: Helm, test_cluster: LocalCluster, namespace: str, foreign_crds: None, custom: bool
) -> None:
    docs = helm.template("dry", namespace, CUSTOM_VALUES if custom else None)
    proc = test_cluster.kubectl(
        "apply", "--dry-run=server", "-o", "name", "-f", "-", input=yaml.safe_dump_all(docs)
    )
    accepted = proc.stdout.split()
    assert len(accepted) == len(docs), proc.stdout


# -- installing --------------------------------------------------------------------------------


def _objects(test_cluster: LocalCluster, manifest: str) -> list[str]:
    """The objects of a manifest that exist, as kind/name."""
    proc = test_cluster.kubectl(
        "get", "--ignore-not-found", "-o", "name", "-f", "-", input=manifest
    )
    return proc.stdout.split()


def test_install_creates_every_object_upgrade_keeps_the_certificate_uninstall_leaves_crds(
    helm: Helm, test_cluster: LocalCluster, namespace: str
) -> None:
    release = f"kn-{namespace[2:8]}"
    install = helm.run("install", release, str(CHART), "-n", namespace, cluster=test_cluster)
    try:
        assert "kubectl label node" in install.stdout  # NOTES.txt
        manifest = helm.run(
            "get", "manifest", release, "-n", namespace, cluster=test_cluster
        ).stdout
        docs = [d for d in yaml.safe_load_all(manifest) if d]
        assert len(docs) > 20
        assert len(_objects(test_cluster, manifest)) == len(docs)

        secret_name = one(docs, "Secret", "-webhooks-tls")["metadata"]["name"]
        before = test_cluster.get("secret", "-n", namespace, secret_name)["data"]
        helm.run(
            "upgrade",
            release,
            str(CHART),
            "-n",
            namespace,
            "--set",
            "operator.replicas=4",
            cluster=test_cluster,
        )
        after = test_cluster.get("secret", "-n", namespace, secret_name)["data"]
        assert after == before, "an upgrade must keep the webhooks' certificate"
        name = one(docs, "ValidatingWebhookConfiguration")["metadata"]["name"]
        config = test_cluster.get("validatingwebhookconfiguration", name)
        assert {w["clientConfig"]["caBundle"] for w in config["webhooks"]} == {before["ca.crt"]}
        operator = one(docs, "Deployment", "-operator")["metadata"]["name"]
        assert test_cluster.get("deployment", "-n", namespace, operator)["spec"]["replicas"] == 4
    finally:
        helm.run("uninstall", release, "-n", namespace, "--wait", cluster=test_cluster)

    assert _objects(test_cluster, manifest) == []
    left = test_cluster.kubectl(
        "get",
        "all,secrets,configmaps,serviceaccounts,roles,rolebindings,leases",
        "-n",
        namespace,
        "-l",
        f"app.kubernetes.io/instance={release}",
        "-o",
        "name",
    ).stdout.split()
    assert left == []
    crds = test_cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/virtualmachines.kubenova.io" in crds


# -- least privilege ---------------------------------------------------------------------------


@pytest.fixture
def release(helm: Helm, test_cluster: LocalCluster, namespace: str) -> Iterator[str]:
    name = f"rb-{namespace[2:8]}"
    helm.run("install", name, str(CHART), "-n", namespace, cluster=test_cluster)
    yield name
    helm.run("uninstall", name, "-n", namespace, "--wait", cluster=test_cluster)


def test_each_component_may_do_only_what_it_needs(
    test_cluster: LocalCluster, namespace: str, release: str
) -> None:
    def sa(component: str) -> str:
        if component == "tenant":
            return TENANT
        return f"system:serviceaccount:{namespace}:{release}-kubenova-{component}"

    # A tenant with the namespace's built-in edit role, which the chart's tenant roles
    # aggregate into (the controller manager does that asynchronously).
    test_cluster.kubectl(
        "create", "rolebinding", "tenant-edit", "-n", namespace, "--clusterrole=edit",
        f"--user={TENANT}",
    )  # fmt: skip
    wait_for(
        "the chart's tenant roles to be aggregated into edit",
        lambda: test_cluster.kubectl(
            "auth", "can-i", "create", "virtualmachines.kubenova.io", "-n", namespace,
            f"--as={TENANT}", check=False,
        ).stdout.strip() == "yes",
    )  # fmt: skip

    # (who, verb, resource, subresource, namespace or "" for all, allowed)
    table = [
        ("operator", "patch", "virtualmachines.kubenova.io", "status", "", True),
        ("operator", "patch", "hosts.kubenova.io", "status", "", True),
        ("operator", "create", "leases.coordination.k8s.io", "", namespace, True),
        ("operator", "create", "leases.coordination.k8s.io", "", "default", False),
        ("operator", "delete", "virtualmachines.kubenova.io", "", "", False),
        ("operator", "delete", "vmmigrations.kubenova.io", "", "", True),  # finished ones
        ("operator", "patch", "hosts.kubenova.io", "", "", False),
        ("operator", "get", "secrets", "", namespace, False),
        ("operator", "list", "vmquotas.kubenova.io", "", "", True),
        ("operator", "update", "vmquotas.kubenova.io", "status", "", True),
        ("operator", "update", "vmquotas.kubenova.io", "", "", False),
        ("operator", "create", "events", "", namespace, True),
        ("agent", "patch", "virtualmachines.kubenova.io", "status", "", True),
        ("agent", "create", "hosts.kubenova.io", "", "", True),
        ("agent", "update", "leases.coordination.k8s.io", "", namespace, True),
        ("agent", "create", "virtualmachines.kubenova.io", "", "", False),
        ("agent", "delete", "hosts.kubenova.io", "", "", False),
        ("agent", "patch", "flavors.kubenova.io", "", "", False),
        ("agent", "create", "leases.coordination.k8s.io", "", "default", False),
        ("agent", "list", "secrets", "", "", False),
        ("agent", "watch", "secrets", "", "", False),
        ("agent", "get", "secrets", "", "", True),
        ("agent", "create", "events", "", "", True),
        ("agent", "delete", "leases.coordination.k8s.io", "", namespace, False),
        ("agent", "create", "vmmigrations.kubenova.io", "", "", False),
        ("agent", "patch", "hosts.kubenova.io", "status", "", True),
        ("agent", "get", "vmimages.kubenova.io", "", "", True),
        ("agent", "patch", "vmimages.kubenova.io", "status", "", True),
        ("agent", "patch", "vmimages.kubenova.io", "", "", False),
        ("agent", "delete", "vmimages.kubenova.io", "", "", False),
        ("agent", "list", "resourcepools.kubenova.io", "", "", True),
        ("tenant", "list", "vmimages.kubenova.io", "", "", True),
        ("tenant", "create", "vmimages.kubenova.io", "", "", False),
        ("tenant", "patch", "vmimages.kubenova.io", "status", "", False),
        ("operator", "patch", "vmimages.kubenova.io", "", "", False),
        ("operator", "watch", "vmimages.kubenova.io", "", "", True),
        ("operator", "patch", "vmimages.kubenova.io", "status", "", True),
        ("tenant", "create", "virtualmachines.kubenova.io", "", namespace, True),
        ("tenant", "delete", "vmmigrations.kubenova.io", "", namespace, True),
        ("tenant", "get", "vmquotas.kubenova.io", "", namespace, True),
        ("tenant", "update", "vmquotas.kubenova.io", "", namespace, False),
        ("tenant", "patch", "virtualmachines.kubenova.io", "status", namespace, False),
        ("tenant", "patch", "vmquotas.kubenova.io", "status", namespace, False),
        ("tenant", "create", "virtualmachines.kubenova.io", "", "default", False),
        ("tenant", "patch", "hosts.kubenova.io", "", "", False),
        ("webhooks", "update", "vmquotas.kubenova.io", "status", "", True),
        ("webhooks", "list", "flavors.kubenova.io", "", "", True),
        ("webhooks", "patch", "hosts.kubenova.io", "", "", False),
        ("webhooks", "patch", "virtualmachines.kubenova.io", "status", "", False),
        ("webhooks", "create", "leases.coordination.k8s.io", "", namespace, False),
    ]
    wrong = []
    for who, verb, resource, sub, ns, allowed in table:
        args = ["auth", "can-i", verb, resource, f"--as={sa(who)}"]
        args += [f"--subresource={sub}"] if sub else []
        args += ["-n", ns] if ns else ["-A"]
        answer = test_cluster.kubectl(*args, check=False).stdout.strip()
        if answer != ("yes" if allowed else "no"):
            wrong.append((who, verb, resource, sub, ns or "*", answer))
    assert wrong == []


def _vm(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": "small", "boot": {"image": "test.qcow2"}},
    }


def _flow_control_names(tc: LocalCluster) -> dict[str, str]:
    """The FlowSchemas' and priority levels' names, by uid."""
    names = {}
    for kind in ("flowschemas", "prioritylevelconfigurations"):
        items = json.loads(tc.kubectl("get", kind, "-o", "json").stdout)["items"]
        names.update({i["metadata"]["uid"]: i["metadata"]["name"] for i in items})
    return names


def _classified(client: Client, path: str) -> tuple[str, str]:
    """The uids of the FlowSchema and the priority level API Priority and Fairness gave a GET
    of `path` by `client`, from the reply's X-Kubernetes-PF-* headers (a request the
    authorizer refuses is classified before that, so a 403 says it too)."""
    resource, _, query = path.partition("?")
    method, url, headers, body, _ = client.api.param_serialize(
        "GET", resource, query_params=urllib.parse.parse_qsl(query), auth_settings=["BearerToken"]
    )
    reply = client.api.call_api(method, url, headers, body).headers
    return reply["X-Kubernetes-PF-FlowSchema-UID"], reply["X-Kubernetes-PF-PriorityLevel-UID"]


def test_kubenova_queues_ahead_of_tenants_and_a_tenant_account_of_its_name_does_not(
    test_cluster: LocalCluster, namespace: str, release: str
) -> None:
    """Each component's requests land in the priority level of the cluster's own control
    loops; a tenant's ServiceAccount named like the operator, in the tenant's namespace, stays
    with every other pod's in workload-low."""
    tenant_ns = f"{namespace}-tenant"
    test_cluster.kubectl("create", "namespace", tenant_ns)
    try:
        account = f"{release}-kubenova-operator"
        test_cluster.kubectl("create", "serviceaccount", account, "-n", tenant_ns)
        accounts = {
            "operator": (namespace, account),
            "agent": (namespace, f"{release}-kubenova-agent"),
            "webhooks": (namespace, f"{release}-kubenova-webhooks"),
            "tenant": (tenant_ns, account),
        }
        clients = {
            who: token_client(test_cluster, who, service_account_token(test_cluster, ns, sa, None))
            for who, (ns, sa) in accounts.items()
        }
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        vms = f"/apis/{API_VERSION}/virtualmachines?limit=1"
        prefix = f"{release}-kubenova"
        cases = [
            ("operator", f"{leases}/kubenova-operator", (f"{prefix}-leader-election",
                                                         "leader-election")),
            ("operator", leases, (f"{prefix}-controllers", "workload-high")),
            ("operator", vms, (f"{prefix}-controllers", "workload-high")),
            ("webhooks", f"/apis/{API_VERSION}/namespaces/{namespace}/vmquotas",
             (f"{prefix}-controllers", "workload-high")),
            ("agent", f"{leases}/some-host", (f"{prefix}-agents", "node-high")),
            ("agent", vms, (f"{prefix}-agents", "node-high")),
            ("tenant", f"{leases}/kubenova-operator", ("service-accounts", "workload-low")),
            ("tenant", vms, ("service-accounts", "workload-low")),
        ]  # fmt: skip
        uids = [(who, path, _classified(clients[who], path)) for who, path, _ in cases]
        names = _flow_control_names(test_cluster)
        got = [(who, path, (names[schema], names[level])) for who, path, (schema, level) in uids]
        assert got == [(who, path, want) for who, path, want in cases]
    finally:
        test_cluster.kubectl("delete", "namespace", tenant_ns, "--wait=false")


def _bind(cluster: LocalCluster, vm: dict[str, Any], host: str) -> None:
    """As the operator binds: status.host, by the admin (no operator runs here)."""
    meta = vm["metadata"]
    cluster.kubectl("patch", "vm", meta["name"], "-n", meta["namespace"], "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": {"host": host}}))  # fmt: skip


def test_an_agent_may_write_only_its_own_host_lease_and_vms(
    helm: Helm, test_cluster: LocalCluster, namespace: str
) -> None:
    """The installed chart's agent ServiceAccount, with tokens from the TokenRequest API bound
    to pods on two Nodes, as the kubelet gets them for the DaemonSet's pods."""
    mine, other = f"{namespace}-a", f"{namespace}-b"
    vms = [_vm(f"vm-{h[-1]}", namespace) for h in (mine, other)]
    # Before the chart: its webhooks fail closed and no pod serves them here.
    test_cluster.kubectl("create", "-f", "-", input=yaml.safe_dump_all(vms))
    for vm, host in zip(vms, (mine, other), strict=True):
        _bind(test_cluster, vm, host)
    name = f"ag-{namespace[2:8]}"
    helm.run("install", name, str(CHART), "-n", namespace, cluster=test_cluster)
    try:
        account = f"{name}-kubenova-agent"
        user = f"system:serviceaccount:{namespace}:{account}"
        agent = token_client(
            test_cluster, user, service_account_token(test_cluster, namespace, account, mine)
        )
        unbound = token_client(
            test_cluster, user, service_account_token(test_cluster, namespace, account, None)
        )
        in_force(
            "the agent-confinement policy",
            lambda: agent.create("hosts", _host(other), dry_run=True),
            f"may write only Host {mine}",
        )
        test_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_host(mine)))
        admin = {"spec": {"unschedulable": True}, "metadata": {"annotations": {DRAIN: "x"}}}
        test_cluster.kubectl("patch", "host", mine, "--type=merge", "-p", json.dumps(admin))
        host_before = test_cluster.get("host", mine)

        def lease(host: str) -> str:
            meta = kubernetes.client.V1ObjectMeta(name=f"kubenova-host-{host}")
            spec = kubernetes.client.V1LeaseSpec(holder_identity=host, lease_duration_seconds=40)
            body = kubernetes.client.V1Lease(metadata=meta, spec=spec)
            return agent.attempt(lambda: agent.coord.create_namespaced_lease(namespace, body))

        def vm_status(vm: str, status: dict[str, Any]) -> str:
            return agent.patch("virtualmachines", vm, {"status": status}, namespace, status=True)

        running = {"phase": "Running"}
        outcomes = {
            "own host status": agent.patch(
                "hosts", mine, {"status": {"capacity": {"cpus": 8}}}, status=True
            ),
            "own lease": lease(mine),
            "own vm": vm_status("vm-a", running),
            "other host": agent.create("hosts", _host(other)),
            "other lease": lease(other),
            "other vm": vm_status("vm-b", running),
            "unbound token": unbound.patch(
                "virtualmachines", "vm-a", {"status": running}, namespace, status=True
            ),
            "relabel into a pool": agent.patch(
                "hosts", mine, {"metadata": {"labels": {"kubenova.io/class": "dedicated"}}}
            ),
            "uncordon": agent.patch("hosts", mine, {"spec": {"unschedulable": False}}),
            "clear the drain": agent.patch(
                "hosts", mine, {"metadata": {"annotations": {DRAIN: None}}}
            ),
            "foreign migration uri": agent.patch(
                "hosts", mine,
                {"status": {"migration": {"uri": "qemu+ext:///system?command=/bin/sh"}}},
                status=True,
            ),
            "move a vm": vm_status("vm-a", {"host": other}),
        }  # fmt: skip
        report = "\n".join(f"{k}: {v or 'allowed'}" for k, v in outcomes.items())
        assert {k for k, v in outcomes.items() if not v} == {
            "own host status", "own lease", "own vm",
        }, report  # fmt: skip
        assert f"may write only Host {mine}" in outcomes["other host"], report
        assert f"may write only Lease kubenova-host-{mine}" in outcomes["other lease"], report
        assert "may write only VMs bound to it" in outcomes["other vm"], report
        assert "not bound to a node" in outcomes["unbound token"], report
        assert "may not set, change or remove the labels" in outcomes["relabel into a pool"]
        assert "may not write the spec (cordon, taints)" in outcomes["uncordon"], report
        assert DRAIN in outcomes["clear the drain"], report
        assert "may offer status.migration.uri only" in outcomes["foreign migration uri"]
        assert "may not write status.host" in outcomes["move a vm"], report
        # Nothing refused changed anything.
        host_after = test_cluster.get("host", mine)
        assert host_after["spec"] == host_before["spec"]
        assert host_after["metadata"].get("labels") == host_before["metadata"].get("labels")
        assert host_after["metadata"]["annotations"] == host_before["metadata"]["annotations"]
        assert not host_after["status"].get("migration", {}).get("uri")
        assert test_cluster.get("vm", "-n", namespace, "vm-a")["status"].get("host") == mine
    finally:
        helm.run("uninstall", name, "-n", namespace, "--wait", cluster=test_cluster)
        test_cluster.kubectl("delete", "host", mine, other, "--ignore-not-found", "--wait=false")
        test_cluster.kubectl("delete", "node", mine, "--ignore-not-found", "--wait=false")


def _host(name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Host", "metadata": {"name": name}, "spec": {}}
