"""kube.client.call(): a call to an API server that accepts the connection and never answers
ends with an error after the default time-out instead of holding its thread for ever."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import kubernetes
import pytest
import urllib3

from kubenova.kube import client

pytestmark = pytest.mark.unit


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Plain HTTP on loopback that accepts, reads and never replies."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join()
    for c in held:
        c.close()
    sock.close()


def _core(url: str) -> kubernetes.client.CoreV1Api:
    cfg = kubernetes.client.Configuration()
    cfg.host = url
    cfg.retries = False  # urllib3's own retries would multiply the wait
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(cfg))


def test_a_call_that_is_never_answered_times_out(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", (1.0, 0.5))
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        asyncio.run(client.call(_core(silent_server).list_namespace, attempts=2, base_delay=0.01))
    took = time.monotonic() - started
    assert took < 20, f"took {took:.1f} s: the time-out did not apply"


def test_a_time_out_the_caller_names_wins(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "REQUEST_TIMEOUT", (1.0, 3600.0))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        asyncio.run(
            client.call(_core(silent_server).list_namespace, attempts=1, _request_timeout=0.5)
        )
