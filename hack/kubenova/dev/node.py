"""`kubenova-dev node`: real Kubernetes nodes on this machine, for the chart and its image.

A node-mode control plane (cluster.NodeMode) and N kubelets, each with its own containerd and
runc, all inside one network namespace of their own, so nothing binds, routes or filters in the
machine's. Its API server's port is forwarded from the machine's loopback (same port, same
kubeconfig), so kubectl and helm work from outside. Does I/O: namespaces, mounts, cgroups,
processes; `down` stops and removes all of them, also after a run that was killed halfway.

Layout (node i of the folder's key K; every name is derived from the folder, so `down` finds
what a crashed `up` left):
  network namespace  kn-K: node i at 10.213.0.i on a bridge with no ports, its pods on bridge
                     cni<i> in 10.244.i.0/24; the `kubernetes` Service 10.0.0.1:443 DNATed to
                     the API server on the namespace's loopback; no route out
  containerd         <folder>/node<i>/containerd, socket and state in /run/kubenova-node/K/node<i>
  kubelet            <folder>/node<i>/kubelet, cgroup root /kubenova-K-node<i>, its own mount
                     namespace (machine-wide sysctls it insists on writing, device-plugin and
                     container-log folders shadowed there)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubenova.dev import cluster

NETNS_DIR = Path("/var/run/netns")
RUN_ROOT = Path("/run/kubenova-node")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
BUILD_NODE = cluster.HACK_DIR / "controlplane" / "build-node.sh"
PAUSE_IMAGE = "localhost/pause:3.10"
NODE_LABEL = "kubenova.io/hypervisor=true"
SERVICE_IP = "10.0.0.1"
# The kubelet sets these at start and exits when it cannot; they are machine-wide, so it gets
# private copies (bind-mounted files) in its own mount namespace.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
)
# Folders the kubelet uses whatever its --root-dir: shadowed per kubelet, so two nodes (or two
# folders' nodes) do not share a device-plugin socket or container-log links.
KUBELET_FIXED_DIRS = ("/var/lib/kubelet/device-plugins", "/var/log/containers")
TOOLS = (
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "ip",
    "iptables",
    "unshare",
    "mount",
    "gcc",
)
CLONE_NEWNET = 0x40000000
STOP_TIMEOUT = 20.0


class NodeError(RuntimeError):
    """A node could not be started or reached; the message names the log or the command."""


def node_binaries(stream_progress: bool = True) -> Path:
    """The folder with kubelet and kube-scheduler, built on first use (build-node.sh);
    `$KUBENOVA_NODE_BIN_DIR` points at a ready folder instead."""
    return cluster.built_folder(
        BUILD_NODE,
        "KUBENOVA_NODE_BIN_DIR",
        NodeError,
        "kubelet and kube-scheduler",
        stream_progress=stream_progress,
    )


def default_folder() -> Path:
    env = os.environ.get("KUBENOVA_NODE_FOLDER")
    return Path(env) if env else cluster.default_folder().parent / "node"


@dataclass(frozen=True)
class Layout:
    """Every name and path of one folder's nodes, derived from the folder alone."""

    folder: Path

    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.folder).encode()).hexdigest()[:8]

    @property
    def netns(self) -> str:
        return f"kn-{self.key}"

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def run(self) -> Path:
        return RUN_ROOT / self.key

    @property
    def plane(self) -> Path:
        return self.folder / "cluster"

    @property
    def state_file(self) -> Path:
        return self.folder / "node.json"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def hostpaths(self) -> Path:
        """The folder for the chart's agent hostPaths on these nodes (test:/// hosts)."""
        return self.folder / "hostpaths"

    def name(self, i: int) -> str:
        return f"kn-node{i}"

    def ip(self, i: int) -> str:
        return f"10.213.0.{i}"

    def dir(self, i: int) -> Path:
        return self.folder / f"node{i}"

    def socket(self, i: int) -> Path:
        return self.run / f"node{i}" / "containerd.sock"

    def cgroup(self, i: int) -> str:
        return f"kubenova-{self.key}-node{i}"

    def cni_network(self, i: int) -> str:
        return f"kn-{self.key}-{i}"


@dataclass
class NodeState:
    """What `up` started, as written to node.json."""

    nodes: int
    port: int
    pids: dict[str, int] = field(default_factory=dict)


# -- namespaces and small tools ---------------------------------------------------------------


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _setns(path: Path) -> None:
    """Move this thread (and what it starts from now on) into the network namespace."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise NodeError(f"setns {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def preflight() -> None:
    """Refuse early, saying what to install, rather than halfway through `up`."""
    if os.geteuid() != 0:
        raise NodeError("kubenova-dev node needs root (namespaces, mounts, cgroups)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not (CNI_BIN / "bridge").exists():
        missing.append(f"{CNI_BIN}/bridge (containernetworking-plugins)")
    if missing:
        raise NodeError(f"missing {', '.join(missing)}; run hack/setup")
    # A kubelet's private mounts stay private only if / does not propagate (it does under
    # systemd; there, run this in a container or `mount --make-rprivate /` first).
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/" and any(f.startswith("shared:") for f in fields[6:]):
            raise NodeError("/ is a shared mount; kubelet's private sysctl copies would leak")
    if not _cgroup_controllers():
        raise NodeError(f"no cgroup v1 controllers under {CGROUP_ROOT} (cgroup v2 is not wired)")


def _cgroup_controllers() -> list[Path]:
    """The cgroup v1 hierarchies (cpu, memory, ...), not the v2 `unified` one."""
    return sorted(
        c
        for c in CGROUP_ROOT.iterdir()
        if c.is_dir()
        and not c.is_symlink()
        and c.name != "unified"
        and (c / "cgroup.procs").exists()
    )


def _stop(pid: int, group: bool = True) -> bool:
    """SIGTERM (its process group), SIGKILL after a grace; True if it was running."""
    if not cluster.alive(pid):
        return False
    kill: Callable[[int, int], None] = os.killpg if group else os.kill
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while cluster.alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return True


def _spawn(argv: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )


def _wait(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2500:] if log and log.exists() else ""
    raise NodeError(
        f"{what} not ready after {timeout:.0f} s" + (f"; {log} ends:\n{tail}" if log else "")
    )


# -- the forwarder: machine loopback -> the namespace's API server --------------------------


def serve_forward(listen_fd: int, netns: Path, port: int) -> None:
    """Accept on `listen_fd` (a socket bound in the machine's namespace), connect each client
    to 127.0.0.1:`port` inside `netns`: sockets made after setns live in the namespace."""
    listener = socket.socket(fileno=listen_fd)
    _setns(netns)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the pause image, made here (no registry) -------------------------------------------------

PAUSE_C = r"""
/* What kubernetes/build/pause/linux/pause.c does: hold the pod's namespaces, reap zombies. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void sigdown(int s) { psignal(s, "Shutting down, got signal"); exit(0); }
static void sigreap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {.sa_handler = sigdown};
  sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  struct sigaction r = {.sa_handler = sigreap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
"""


def pause_archive(cache: Path) -> Path:
    """A docker-archive of the sandbox image: pause.c linked static, one layer; cached."""
    key = hashlib.sha256(PAUSE_C.encode()).hexdigest()[:12]
    out = cache / f"pause-{key}.tar"
    if out.exists():
        return out
    work = cache / f"pause-{key}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(PAUSE_C)
    _run("gcc", "-Os", "-static", "-s", "-o", str(work / "pause"), str(work / "pause.c"))
    out.write_bytes(
        docker_archive(PAUSE_IMAGE, {"pause": (work / "pause").read_bytes()}, ["/pause"])
    )
    shutil.rmtree(work)
    return out


def docker_archive(ref: str, files: dict[str, bytes], entrypoint: list[str]) -> bytes:
    """`docker save`'s format for a one-layer image of executable `files`: what `ctr images
    import` reads."""

    def tar_of(members: dict[str, bytes], mode: int) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                t.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    layer = tar_of(files, 0o755)
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        }
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_id}/layer.tar"]}]
    return tar_of(
        {
            f"{layer_id}/layer.tar": layer,
            config_name: config,
            "manifest.json": json.dumps(manifest).encode(),
        },
        0o644,
    )


# -- up ---------------------------------------------------------------------------------------


class Nodes:
    """The nodes of one folder."""

    def __init__(self, folder: Path) -> None:
        self.layout = Layout(folder.resolve())
        self.folder = self.layout.folder

    def state(self) -> NodeState | None:
        f = self.layout.state_file
        return NodeState(**json.loads(f.read_text())) if f.exists() else None

    def _save(self, state: NodeState) -> None:
        self.layout.state_file.write_text(json.dumps(asdict(state), indent=2))

    def plane(self, bin_dir: Path = Path()) -> cluster.ControlPlane:
        """The control plane's handle: kubeconfig, env, kubectl (with `bin_dir`), down."""
        return cluster.ControlPlane(self.layout.plane, bin_dir)

    def up(
        self, nodes: int = 1, timeout: float = 180.0, log: Callable[[str], None] = print
    ) -> NodeState:
        """Start the node-mode control plane and `nodes` kubelets; wait until every Node is
        Ready and untainted. Whatever an earlier run of this folder left is removed first."""
        if not 1 <= nodes <= 9:
            raise NodeError(f"--nodes {nodes}: between 1 and 9 nodes (10.213.0.N, 10.244.N.0/24)")
        preflight()
        self.down()
        started = time.monotonic()
        bin_dir = cluster.ensure_binaries()
        node_bin = node_binaries()
        for d in (self.folder, self.layout.logs, self.layout.run, self.layout.hostpaths):
            d.mkdir(parents=True, exist_ok=True)
        pause = pause_archive(cluster.default_folder().parent / "images")
        state = NodeState(nodes=nodes, port=0)
        try:
            self._netns(nodes)
            state.port, state.pids["forwarder"] = self._forwarder()
            self._save(state)
            # From here on this process -- and all it starts -- lives in the namespace.
            _setns(self.layout.netns_path)
            plane = cluster.ControlPlane(
                self.layout.plane,
                bin_dir,
                node=cluster.NodeMode(node_bin / "kube-scheduler", state.port),
            )
            plane.up(timeout=timeout, log=log)
            self._service_dnat(state.port)
            for i in range(1, nodes + 1):
                state.pids[f"containerd-{i}"] = self._containerd(i)
                self._save(state)
                self._import(i, pause)
                state.pids[f"kubelet-{i}"] = self._kubelet(i, node_bin, plane.kubeconfig)
                self._save(state)
            for i in range(1, nodes + 1):
                self._node_ready(i, plane, timeout)
        except BaseException:
            self.down()
            raise
        log(f"{nodes} node(s) Ready in {time.monotonic() - started:.1f} s")
        return state

    def _netns(self, nodes: int) -> None:
        ns = self.layout.netns
        _run("ip", "netns", "add", ns)
        ip = ("ip", "-n", ns)
        _run(*ip, "link", "set", "lo", "up")
        # The nodes' addresses sit on a bridge with no ports (no dummy module needed).
        _run(*ip, "link", "add", "kn-br", "type", "bridge")
        for i in range(1, nodes + 1):
            _run(*ip, "addr", "add", f"{self.layout.ip(i)}/24", "dev", "kn-br")
        _run(*ip, "link", "set", "kn-br", "up")
        # Nothing leaves the namespace; the Service range is routed so that OUTPUT DNAT sees it.
        _run(*ip, "route", "add", "blackhole", "default")
        _run(*ip, "route", "add", "10.0.0.0/24", "dev", "kn-br")
        for key, value in (("net/ipv4/conf/all/route_localnet", "1"), ("net/ipv4/ip_forward", "1")):
            # /proc/sys/net is per network namespace: written from inside, it stays inside.
            _run(
                "nsenter",
                f"--net={self.layout.netns_path}",
                "sh",
                "-c",
                f"echo {value} >/proc/sys/{key}",
            )

    def _forwarder(self) -> tuple[int, int]:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port: int = listener.getsockname()[1]
        fd = listener.fileno()
        proc = _spawn(
            [
                sys.executable,
                "-m",
                "kubenova.dev.node",
                "forward",
                str(fd),
                str(self.layout.netns_path),
                str(port),
            ],
            self.layout.logs / "forwarder.log",
            pass_fds=(fd,),
        )
        listener.close()
        return port, proc.pid

    def _service_dnat(self, port: int) -> None:
        # Pods reach the API server as the `kubernetes` Service (in its serving certificate);
        # route_localnet lets packets from the pod bridges be DNATed to loopback.
        for chain in ("PREROUTING", "OUTPUT"):
            rule = ["-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443", "-j", "DNAT"]
            _run("iptables", "-t", "nat", "-A", chain, *rule, f"--to-destination=127.0.0.1:{port}")

    def _containerd(self, i: int) -> int:
        d, run, sock = self.layout.dir(i), self.layout.run / f"node{i}", self.layout.socket(i)
        for sub in ("containerd", "cni/net.d"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        (d / "containerd" / "config.toml").write_text(f"""version = 2
root = "{d}/containerd/root"
state = "{run}/containerd"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE in a container: runc cannot lower oom_score_adj below ours (the
  # sandbox asks for -998) and every sandbox failed with "can't get final child's PID".
  restrict_oom_score_adj = true
  # Pods' network namespaces under this node's state, not the machine's /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{run}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
""")
        network = self.layout.cni_network(i)
        conflist = {
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": f"cni{i}",
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"10.244.{i}.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                }
            ],
        }
        (d / "cni" / "net.d" / "10-kubenova.conflist").write_text(json.dumps(conflist, indent=2))
        log = self.layout.logs / f"containerd-{i}.log"
        proc = _spawn(["containerd", "--config", str(d / "containerd" / "config.toml")], log)
        _wait(
            f"containerd of node {i}",
            lambda: self._ctr(i, "version", check=False).returncode == 0,
            30,
            log,
        )
        return proc.pid

    def _ctr(self, i: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(
            "ctr", "-a", str(self.layout.socket(i)), "-n", "k8s.io", *args, check=check, timeout=300
        )

    def _import(self, i: int, archive: Path) -> None:
        self._ctr(i, "images", "import", str(archive))

    def _kubelet(self, i: int, node_bin: Path, kubeconfig: Path) -> int:
        d = self.layout.dir(i) / "kubelet"
        root, sysctl = d / "root", d / "sysctl"
        for sub in (
            root,
            d / "pki",
            sysctl,
            d / "pod-logs",
            *(d / Path(f).name for f in KUBELET_FIXED_DIRS),
        ):
            sub.mkdir(parents=True, exist_ok=True)
        for c in _cgroup_controllers():
            (c / self.layout.cgroup(i)).mkdir(exist_ok=True)
        (d / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        (d / "config.yaml").write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "containerRuntimeEndpoint": f"unix://{self.layout.socket(i)}",
                    "cgroupDriver": "cgroupfs",
                    # its own cgroup root, so two kubelets do not both manage /kubepods
                    "cgroupRoot": f"/{self.layout.cgroup(i)}",
                    "failSwapOn": False,
                    "failCgroupV1": False,
                    "address": self.layout.ip(i),
                    "healthzBindAddress": self.layout.ip(i),
                    "readOnlyPort": 0,
                    "authentication": {
                        "anonymous": {"enabled": True},
                        "webhook": {"enabled": False},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "podLogsDir": str(d / "pod-logs"),
                    "resolvConf": str(d / "resolv.conf"),
                    # This machine's disk is shared: never evict for it, never GC images.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "maxPods": 30,
                    "syncFrequency": "10s",
                }
            )
        )
        # The root dir is made rshared first, so what the kubelet mounts there (secrets,
        # service-account tokens) reaches the mount namespace containerd and runc work in.
        _run("mount", "--bind", str(root), str(root))
        _run("mount", "--make-rshared", str(root))
        binds = []
        for f in KUBELET_SYSCTLS:
            copy = sysctl / f.replace("/", "_")
            copy.write_text(Path(f"/proc/sys/{f}").read_text())
            binds.append((copy, Path(f"/proc/sys/{f}")))
        for fixed in KUBELET_FIXED_DIRS:
            Path(fixed).mkdir(parents=True, exist_ok=True)
            binds.append((d / Path(fixed).name, Path(fixed)))
        # rprivate first: should /proc propagate, the copies must not reach the machine's.
        script = "; ".join(
            ["mount --make-rprivate /proc", *(f"mount --bind {src} {dst}" for src, dst in binds)]
        )
        argv = [
            str(node_bin / "kubelet"),
            f"--config={d / 'config.yaml'}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--cert-dir={d / 'pki'}",
            f"--hostname-override={self.layout.name(i)}",
            f"--node-ip={self.layout.ip(i)}",
            f"--node-labels={NODE_LABEL}",
            "--v=1",
        ]
        proc = _spawn(
            [
                "unshare",
                "-m",
                "--propagation",
                "unchanged",
                "sh",
                "-ec",
                f"{script}; exec {' '.join(argv)}",
            ],
            self.layout.logs / f"kubelet-{i}.log",
        )
        return proc.pid

    def _node_ready(self, i: int, plane: cluster.ControlPlane, timeout: float) -> None:
        name, log = self.layout.name(i), self.layout.logs / f"kubelet-{i}.log"

        def ready() -> bool:
            out = plane.kubectl("get", "node", name, "-o", "json", check=False).stdout
            if not out:
                return False
            node = json.loads(out)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            # node-lifecycle lifts the not-ready taint a kubelet registers with
            return conditions.get("Ready") == "True" and not node["spec"].get("taints")

        _wait(f"node {name}", ready, timeout, log)

    # -- load and status ------------------------------------------------------------------

    def load(self, archive: Path) -> list[str]:
        """Import an image archive (docker-archive or OCI) into every node's containerd."""
        state = self.state()
        if state is None:
            raise NodeError(f"no nodes are up in {self.folder}; run: kubenova-dev node up")
        if not archive.is_file():
            raise NodeError(f"{archive}: no such image archive")
        # all nodes at once: each import writes and unpacks the whole image
        imports = {
            i: subprocess.Popen(
                ["ctr", "-a", str(self.layout.socket(i)), "-n", "k8s.io", "images", "import",
                 str(archive)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(1, state.nodes + 1)
        }  # fmt: skip
        for i, proc in imports.items():
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise NodeError(f"importing {archive} into {self.layout.name(i)}: {err.strip()}")
        return [self.layout.name(i) for i in imports]

    def running(self) -> bool:
        state = self.state()
        return state is not None and all(cluster.alive(p) for p in state.pids.values())

    # -- down -------------------------------------------------------------------------------

    def down(self, remove: bool = True) -> list[str]:
        """Stop everything this folder's nodes run and remove what they left: containers,
        processes, mounts, cgroups, the network namespace and (`remove`) the folder."""
        state = self.state()
        n = (
            state.nodes
            if state
            else max((int(p.name[4:]) for p in self.folder.glob("node[0-9]")), default=0)
        )
        stopped: list[str] = []
        for i in range(1, n + 1):
            if state and _stop(state.pids.get(f"kubelet-{i}", 0)):
                stopped.append(f"kubelet-{i}")
            self._kill_pods(i)
            if state and _stop(state.pids.get(f"containerd-{i}", 0)):
                stopped.append(f"containerd-{i}")
            self._kill_shims(i)
        stopped += self.plane().down(remove=False)
        if state and _stop(state.pids.get("forwarder", 0)):
            stopped.append("forwarder")
        for i in range(1, n + 1):
            self._unmount_and_rmdir(i)
        if self.layout.netns_path.exists():
            _run("ip", "netns", "del", self.layout.netns, check=False)
        # libcni's result cache is machine-wide; ours are named after our networks, and the
        # loopback results after the same sandboxes.
        cache = Path("/var/lib/cni/results")
        for i in range(1, n + 1):
            network = self.layout.cni_network(i)
            for result in cache.glob(f"{network}-*"):
                sandbox = result.name.removeprefix(f"{network}-").split("-")[0]
                (cache / f"cni-loopback-{sandbox}-lo").unlink(missing_ok=True)
                result.unlink(missing_ok=True)
        for d in ("/var/lib/cni/results", "/var/lib/cni", *KUBELET_FIXED_DIRS, "/var/lib/kubelet",
                  "/run/containerd/fifo", "/run/containerd/s", "/run/containerd"):  # fmt: skip
            with contextlib.suppress(OSError):
                Path(d).rmdir()  # only when empty: others may use them
        shutil.rmtree(self.layout.run, ignore_errors=True)
        with contextlib.suppress(OSError):
            RUN_ROOT.rmdir()
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            self.layout.state_file.unlink(missing_ok=True)
        return stopped

    def _cgroups(self, i: int) -> Iterator[Path]:
        # every hierarchy: runc also makes the pods' cgroups in the v2 `unified` one
        yield from (c for c in CGROUP_ROOT.glob(f"*/{self.layout.cgroup(i)}") if c.is_dir())

    def _kill_pods(self, i: int) -> None:
        """SIGKILL every process in the node's cgroups: containers, whatever containerd says."""
        for _ in range(50):
            pids: set[int] = set()
            for top in self._cgroups(i):
                # os.walk, not rglob: cgroups vanish while we walk (runc removes its own)
                for parent, _, files in os.walk(top):
                    if "cgroup.procs" in files:
                        with contextlib.suppress(OSError):
                            procs = Path(parent, "cgroup.procs").read_text()
                            pids.update(int(p) for p in procs.split())
            live = [p for p in pids if cluster.alive(p)]
            if not live:
                return
            for p in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_shims(self, i: int) -> None:
        """containerd-shim-runc-v2 processes still serving this node's socket."""
        address = f"-address {self.layout.socket(i)}"
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if "containerd-shim" in cmd and address in cmd:
                    _stop(int(proc.name), group=False)

    def _unmount_and_rmdir(self, i: int) -> None:
        prefixes = (str(self.layout.dir(i)) + "/", str(self.layout.run / f"node{i}") + "/")
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes) or point + "/" in prefixes:
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", point, check=False)
        for top in self._cgroups(i):
            for parent, _, _ in os.walk(top, topdown=False):  # deepest first
                with contextlib.suppress(OSError):
                    Path(parent).rmdir()


if __name__ == "__main__":  # `python -m kubenova.dev.node forward FD NETNS PORT` (from up)
    if len(sys.argv) == 5 and sys.argv[1] == "forward":
        serve_forward(int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("use kubenova-dev node up|down|status|load|env")
