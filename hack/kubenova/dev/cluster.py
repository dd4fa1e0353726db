"""A real local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager as
processes on free loopback ports, with TLS, RBAC, service-account keys and an admin
kubeconfig. Does I/O: starts and stops processes, writes a state folder.

The state folder holds everything (certificates, etcd data, logs, `state.json` with the
process ids), so `down` works from another process, and an `up` over a folder left by a killed
run first stops what that run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from kubenova.dev import pki

HACK_DIR = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = HACK_DIR / "controlplane" / "build.sh"
CRD_DIR = HACK_DIR.parent / "crds"
CONTEXT = "kubenova-dev"
STOP_TIMEOUT = 15.0
WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"
"""The common name of the client certificate the API server presents to admission webhooks
(signed by the control plane's CA, `webhook_client_ca`); kubenova's webhooks require it."""
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"
"""The common name of the client certificate the API server's aggregation layer presents to
aggregated API servers (signed by the front-proxy CA, `pki/front-proxy/ca.crt`)."""
KCM_CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)
# What real kubelets add (node mode): Deployments, DaemonSets and their pods, the endpoints the
# API server calls webhooks by, PodDisruptionBudgets, and node-lifecycle, which lifts the
# not-ready taint a kubelet registers its Node with.
NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "disruption-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
)


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or reached; the message says where to
    look (a log file or a command)."""


def ensure_binaries(stream_progress: bool = True) -> Path:
    """The folder with etcd, kube-apiserver, kube-controller-manager, kubectl and helm,
    building them on first use (`$KUBENOVA_BIN_DIR` points at a ready folder instead)."""
    return built_folder(
        BUILD_SCRIPT,
        "KUBENOVA_BIN_DIR",
        ControlPlaneError,
        "the control plane",
        stream_progress=stream_progress,
    )


def built_folder(
    script: Path,
    ready_env: str,
    error: type[RuntimeError],
    what: str,
    stream_progress: bool = True,
) -> Path:
    """The folder `$ready_env` names, or else the one `script` builds (or finds built) and
    prints on the last line of its stdout; a failed build raises `error`, naming `what`."""
    ready = os.environ.get(ready_env)
    if ready:
        return Path(ready)
    proc = subprocess.run(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=None if stream_progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise error(f"building {what} failed: {proc.stderr or ''}")
    return Path(proc.stdout.strip().splitlines()[-1])


def write_kubeconfig(
    path: Path, server: str, ca: Path, user: Mapping[str, Any], user_name: str = "user"
) -> Path:
    """A kubeconfig (mode 0600) for `server`, trusting `ca`, authenticating as `user` (a
    kubeconfig user entry: a client certificate and key, or a bearer token), in the context
    the test guard and `kubenova-dev` expect of a local cluster."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": user_name, "user": dict(user)}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user_name}}],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def kubeconfig_as(
    admin: Path, user: Mapping[str, Any], path: Path, user_name: str = "user"
) -> Path:
    """A kubeconfig for the cluster of kubeconfig `admin`, authenticating as `user`."""
    cluster = yaml.safe_load(admin.read_text())["clusters"][0]["cluster"]
    return write_kubeconfig(
        path, cluster["server"], Path(cluster["certificate-authority"]), user, user_name
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the process that started us dies (test runs)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class State:
    """What `up` started, as written to state.json."""

    server: str
    etcd: str
    pids: dict[str, int]


@dataclass(frozen=True)
class NodeMode:
    """What a control plane needs for real kubelets (`kubenova-dev node`, off by default):
    pods get service-account tokens, the API server calls webhooks at the pod IPs of their
    EndpointSlices (no kube-proxy) and reaches kubelets at their InternalIP (no DNS), the
    workload controllers run, and a kube-scheduler places the pods."""

    scheduler: Path
    """The kube-scheduler binary (hack/controlplane/build-node.sh)."""
    api_port: int | None = None
    """A fixed API server port: the same port forwarded from outside the node's network
    namespace, so one kubeconfig works on both sides."""


class ControlPlane:
    """One local control plane living in `folder`."""

    def __init__(
        self,
        folder: Path,
        bin_dir: Path,
        *,
        die_with_parent: bool = False,
        node: NodeMode | None = None,
        profiling: bool = False,
    ) -> None:
        self.folder = folder.resolve()
        self.bin_dir = bin_dir
        self.die_with_parent = die_with_parent
        self.node = node
        self.profiling = profiling
        """kube-apiserver's and etcd's /debug/pprof (off unless a benchmark asks for them)."""
        self.kubeconfig = self.folder / "admin.kubeconfig"
        self.logs = self.folder / "logs"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._argv: dict[str, list[str]] = {}
        self._ready: dict[str, Callable[[], bool]] = {}

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    @property
    def webhook_client_ca(self) -> Path:
        """The CA that signed the API server's webhook client certificate: what a webhook
        verifies its callers with (`--client-ca`)."""
        return self.folder / "pki" / "ca.crt"

    def state(self) -> State | None:
        if not self.state_file.exists():
            return None
        return State(**json.loads(self.state_file.read_text()))

    def env(self) -> dict[str, str]:
        """Environment for a shell or a subprocess to use this control plane."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- up -----------------------------------------------------------------------------------

    def up(self, timeout: float = 120.0, log: Callable[[str], None] = print) -> State:
        """Start etcd, kube-apiserver and kube-controller-manager; wait until ready; apply the
        CRDs. Anything a previous run left in the folder is stopped first."""
        self.down(remove=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            state = self._start(timeout, log)
        except BaseException:
            self.down(remove=False)
            raise
        log(f"control plane ready in {time.monotonic() - started:.1f} s at {state.server}")
        return state

    def _start(self, timeout: float, log: Callable[[str], None]) -> State:
        certs = self.folder / "pki"
        ca = pki.CertificateAuthority(certs)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            hosts=(
                "127.0.0.1",
                "localhost",
                "10.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
        )
        admin = ca.issue("admin", "kubenova-admin", organization="system:masters", client=True)
        sa = pki.service_account_keys(certs)
        admission = pki.webhook_client_config(certs, ca.issue(
            "webhook-client", WEBHOOK_CLIENT_NAME, client=True
        ))  # fmt: skip
        # The aggregation layer: a CA of its own for the front proxy (requestheader), so no
        # client certificate of the cluster CA can pass for the API server at an aggregated
        # API server (the console's, docs/console.md), and the client certificate it presents.
        front = pki.CertificateAuthority(certs / "front-proxy", "kubenova-dev-front-proxy-ca")
        proxy_client = front.issue("front-proxy-client", FRONT_PROXY_CLIENT_NAME, client=True)

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        if self.node is not None and self.node.api_port:
            api_port = self.node.api_port
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        server = f"https://127.0.0.1:{api_port}"

        self._spawn(
            "etcd",
            [
                "etcd",
                "--name=kubenova-dev",
                f"--data-dir={self.folder / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=kubenova-dev=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                *(["--enable-pprof"] if self.profiling else []),
            ],
        )
        self._write_state(State(server, etcd_url, self._pids()))
        self._ready["etcd"] = lambda: _http_ok(f"{etcd_url}/health")
        _wait_until(self._ready["etcd"], timeout, "etcd", self._log("etcd"))

        self._spawn(
            "kube-apiserver",
            [
                "kube-apiserver",
                f"--etcd-servers={etcd_url}",
                f"--secure-port={api_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={certs}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                # Presents the webhook client certificate to every admission webhook.
                f"--admission-control-config-file={admission}",
                # Aggregated API servers: who the API server authenticated rides in these
                # headers, vouched for by the front-proxy client certificate.
                f"--requestheader-client-ca-file={front.cert_path}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT_NAME}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={proxy_client.cert}",
                f"--proxy-client-key-file={proxy_client.key}",
                f"--profiling={str(self.profiling).lower()}",
                "--v=0",
            ],
        )
        self._write_kubeconfig(server, ca.cert_path, admin)
        self._write_state(State(server, etcd_url, self._pids()))
        context = _client_ssl(ca.cert_path, admin)
        self._ready["kube-apiserver"] = lambda: _http_ok(f"{server}/readyz", context)
        _wait_until(
            self._ready["kube-apiserver"], timeout, "kube-apiserver", self._log("kube-apiserver")
        )

        self._spawn(
            "kube-controller-manager",
            [
                "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                # What a control plane without nodes needs: namespace deletion, garbage collection
                # of owned objects, default service accounts, aggregated RBAC roles.
                "--controllers=" + ",".join(KCM_CONTROLLERS),
                "--leader-elect=false",
                "--secure-port=0",
                f"--root-ca-file={ca.cert_path}",
                f"--service-account-private-key-file={sa.key}",
                "--concurrent-namespace-syncs=5",
            ],
        )
        if self.node is not None:
            kc = f"--kubeconfig={self.kubeconfig}"
            self._spawn(
                "kube-scheduler",
                [
                    str(self.node.scheduler),
                    kc,
                    kc.replace("--", "--authentication-", 1),
                    kc.replace("--", "--authorization-", 1),
                    "--leader-elect=false",
                    "--secure-port=0",
                ],
            )
        state = State(server, etcd_url, self._pids())
        self._write_state(state)
        log(f"applying CRDs from {CRD_DIR}")
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for name in self._procs:
            self._check_alive(name)
        return state

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        if self.node is not None:
            argv = _node_argv(name, argv)
        exe = self.bin_dir / argv[0]
        if not exe.exists():
            raise ControlPlaneError(f"{exe} not found; run hack/controlplane/build.sh")
        self._argv[name] = list(argv)
        out = self._log(name).open("ab")
        self._procs[name] = subprocess.Popen(
            [str(exe), *argv[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        out.close()

    def restart(self, name: str, down_for: float = 0.0, timeout: float = 60.0) -> None:
        """Stop one component (SIGTERM, then SIGKILL) and start it again with the same flags,
        `down_for` seconds later; wait until it is ready again. For fault-injection runs."""
        proc = self._procs[name]
        _stop_group(proc.pid, proc)
        time.sleep(down_for)
        self._spawn(name, self._argv[name])
        state = self.state()
        if state is not None:
            self._write_state(State(state.server, state.etcd, self._pids()))
        ready = self._ready.get(name)
        if ready is not None:
            _wait_until(ready, timeout, name, self._log(name))

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    def _check_alive(self, name: str) -> None:
        code = self._procs[name].poll()
        if code is not None:
            tail = self._log(name).read_text(errors="replace")[-3000:]
            raise ControlPlaneError(f"{name} exited with {code}; its log ends:\n{tail}")

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self._procs.items()}

    def _write_state(self, state: State) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=2))

    def _write_kubeconfig(self, server: str, ca: Path, admin: pki.KeyPair) -> None:
        user = {"client-certificate": str(admin.cert), "client-key": str(admin.key)}
        write_kubeconfig(self.kubeconfig, server, ca, user, "kubenova-admin")

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the control plane's own kubectl against it."""
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- down ---------------------------------------------------------------------------------

    def down(self, remove: bool = True) -> list[str]:
        """Stop every process this folder's state names (newest first), then remove the
        folder when `remove`. Returns the names of the processes that were running."""
        state = self.state()
        stopped: list[str] = []
        if state is not None:
            for name, pid in reversed(list(state.pids.items())):
                if _stop_group(pid, self._procs.get(name)):
                    stopped.append(name)
        self._procs.clear()
        if remove and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
        elif self.state_file.exists():
            self.state_file.unlink()
        return stopped


def _node_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The flags of NodeMode, applied to the default ones."""
    if name == "kube-apiserver":
        extra = ["--enable-aggregator-routing=true", "--kubelet-preferred-address-types=InternalIP"]
        dropped = {"--disable-admission-plugins=ServiceAccount", *extra}
        return [*(a for a in argv if a not in dropped), *extra]
    if name == "kube-controller-manager":
        controllers = "--controllers=" + ",".join(KCM_CONTROLLERS + NODE_CONTROLLERS)
        return [controllers if a.startswith("--controllers=") else a for a in argv]
    return list(argv)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_group(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    """SIGTERM the process group led by `pid`, then SIGKILL after a grace."""
    if not alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if not alive(pid):
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait(5)
    return True


def _client_ssl(ca: Path, client: pki.KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as r:
            return int(r.status) == 200
    except OSError:
        return False


def _wait_until(ready: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise ControlPlaneError(f"{what} not ready after {timeout:.0f} s; {log} ends:\n{tail}")


def default_folder() -> Path:
    cache = Path(os.environ.get("KUBENOVA_CACHE", Path.home() / ".cache" / "kubenova"))
    return cache / "cluster"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use kubenova-dev cluster up|down|env")
