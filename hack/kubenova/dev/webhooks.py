"""Runs the admission webhooks beside a local control plane (the demo and the scale
benchmark): a CA and serving certificate, the two processes, and the registration by URL.

    python -m kubenova.dev.webhooks FOLDER KUBECONFIG   # prints the pids; `kill` stops them
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from kubenova.dev import cluster, pki
from kubenova.webhooks import registration

# Above anything a demo or a benchmark sends: they show throughput, not rate limiting.
GENEROUS_LIMITS = (
    "--namespace-creates=2000/4000",
    "--cluster-creates=4000/8000",
    "--namespace-updates=2000/4000",
    "--cluster-updates=4000/8000",
)


@dataclass(frozen=True)
class Webhooks:
    url: str
    server: subprocess.Popen[bytes]
    releaser: subprocess.Popen[bytes]
    server_argv: list[str]
    releaser_argv: list[str]


def start(
    folder: Path,
    kubeconfig: Path,
    limits: tuple[str, ...] = GENEROUS_LIMITS,
    *,
    api_kubeconfig: Path | None = None,
) -> Webhooks:
    """Start the webhook server and the quota release loop, wait until the server answers,
    and register both webhook configurations with the API server (failurePolicy Fail). The
    server requires the API server's webhook client certificate when the control plane
    beside `kubeconfig` has one (`kubenova.dev.cluster` makes it). The two processes reach
    the API through `api_kubeconfig` when given (a fault proxy's, in chaos runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = pki.CertificateAuthority(folder / "webhook-pki", name="kubenova-dev-webhook-ca")
    pair = ca.issue("webhook", "kubenova-webhook", hosts=("127.0.0.1", "localhost"))
    port = cluster.free_port()
    url = f"https://127.0.0.1:{port}"
    env = {**os.environ, "KUBECONFIG": str(api_kubeconfig or kubeconfig)}
    py = sys.executable
    server_argv = [py, "-m", "kubenova.webhooks", "--host=127.0.0.1", f"--port={port}",
                   f"--cert={pair.cert}", f"--key={pair.key}", *limits]  # fmt: skip
    client_ca = kubeconfig.resolve().parent / "pki" / "ca.crt"
    if (client_ca.parent / "webhook-client.crt").exists():
        server_argv += [f"--client-ca={client_ca}", f"--client-name={cluster.WEBHOOK_CLIENT_NAME}"]
    releaser_argv = [py, "-m", "kubenova.quota.releaser"]
    procs = []
    for argv, log in ((server_argv, "webhooks.log"), (releaser_argv, "quota-release.log")):
        with (folder / log).open("ab") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          start_new_session=True))  # fmt: skip
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1, context=context):
                break
        except OSError:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise cluster.ControlPlaneError(
                    f"the webhook did not answer; see {folder / 'webhooks.log'}"
                ) from None
            time.sleep(0.1)
    configs = registration.configurations(registration.Endpoint(ca_bundle=ca.pem, url=url))
    subprocess.run(
        [str(cluster.ensure_binaries(stream_progress=False) / "kubectl"),
         f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
        input=yaml.safe_dump_all(configs).encode(), check=True, capture_output=True,
    )  # fmt: skip
    return Webhooks(url, procs[0], procs[1], server_argv, releaser_argv)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    hooks = start(Path(args[0]), Path(args[1]))
    print(hooks.server.pid, hooks.releaser.pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
