"""The agent's console endpoint with real TLS and a unix socket standing in for qemu's
serial port: only the console server's certificate gets in, only VMs bound to this host are
served, every viewer sees what the guest prints and what any viewer types reaches it, a
viewer that stops reading is dropped without holding the others up, and the log stays
readable once the port is gone."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubenova.dev import cluster, pki
from kubenova.node_agent import console, domain_xml

pytestmark = pytest.mark.unit

HOST = "host-a"
UID = "0b0e9f5c-1111-4c59-9a7e-2f1b3c4d5e6f"


@dataclass
class Guest:
    """A serial port: accepts one connection at a time, as qemu does; records what it got."""

    path: Path
    received: bytearray
    writers: list[asyncio.StreamWriter]

    async def say(self, data: bytes) -> None:
        for w in self.writers:
            w.write(data)
            await w.drain()


@dataclass
class Setup:
    endpoint: console.ConsoleEndpoint
    url: str
    client: ssl.SSLContext
    other: ssl.SSLContext
    guest: Guest
    state: Path


@pytest.fixture
def certs(tmp_path: Path) -> Iterator[tuple[pki.CertificateAuthority, pki.CertificateAuthority]]:
    yield (
        pki.CertificateAuthority(tmp_path / "console"),
        pki.CertificateAuthority(tmp_path / "other", "another-ca"),
    )


def client_context(ca: pki.CertificateAuthority, pair: pki.KeyPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    ctx.check_hostname = False
    return ctx


@contextlib.asynccontextmanager
async def running(tmp_path: Path, ca: pki.CertificateAuthority, other: pki.CertificateAuthority,
                  vms: dict[str, dict[str, Any]]) -> AsyncIterator[Setup]:  # fmt: skip
    sockets = Path(tempfile.mkdtemp(prefix="kn-con-", dir="/tmp"))  # short: 107-byte limit
    state = tmp_path / "domains"
    settings = domain_xml.DomainSettings(state_dir=str(state), console_dir=str(sockets))
    guest = Guest(Path(domain_xml.console_socket(settings, UID)), bytearray(), [])

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        guest.writers.append(writer)
        while data := await reader.read(4096):
            guest.received += data

    server = await asyncio.start_unix_server(accept, path=str(guest.path))
    serving = ca.issue("agent", "agent", hosts=("127.0.0.1",))
    tls = console.ConsoleTLS(str(serving.cert), str(serving.key), str(ca.cert_path))
    endpoint = console.ConsoleEndpoint(HOST, settings, tls, vms.get)
    port = await endpoint.start("127.0.0.1", cluster.free_port())
    try:
        yield Setup(
            endpoint,
            f"https://127.0.0.1:{port}/v1/namespaces",
            client_context(ca, ca.issue("client", "kubenova-console", client=True)),
            client_context(ca, other.issue("client", "kubenova-console", client=True)),
            guest,
            state,
        )
    finally:
        await endpoint.stop()
        server.close()
        for w in guest.writers:
            w.close()
        guest.path.unlink(missing_ok=True)
        sockets.rmdir()


def vm(host: str = HOST) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "team", "uid": UID}, "status": {"host": host}}


async def receive_until(ws: aiohttp.ClientWebSocketResponse, wanted: bytes) -> bytes:
    got = b""
    while wanted not in got:
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        got += msg.data
    return got


def test_viewers_share_the_port_and_the_log_outlives_it(
    tmp_path: Path, certs: tuple[pki.CertificateAuthority, pki.CertificateAuthority]
) -> None:
    async def scenario() -> None:
        async with (
            running(tmp_path, *certs, {"team/web": vm()}) as s,
            aiohttp.ClientSession() as http,
        ):
            url = f"{s.url}/team/virtualmachines/web/console"
            a = await http.ws_connect(url, ssl=s.client)
            b = await http.ws_connect(url, ssl=s.client)
            for _ in range(100):  # both attached: the port is open once, for both
                if len(s.endpoint.ports.get(UID, console.SerialPort("", print)).viewers) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(s.guest.writers) == 1, "one connection to the serial port for all"
            await s.guest.say(b"login: ")
            assert b"login: " in await receive_until(a, b"login: ")
            assert b"login: " in await receive_until(b, b"login: ")
            await b.send_bytes(b"root\r")
            for _ in range(100):
                if b"root\r" in s.guest.received:
                    break
                await asyncio.sleep(0.02)
            assert bytes(s.guest.received) == b"root\r"

            # The guest goes away: both viewers are told why.
            for w in s.guest.writers:
                w.close()
            for ws in (a, b):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.CLOSE
                assert "serial port closed" in (msg.extra or "")
            # Nothing to attach to now, and the answer says where the log is.
            s.guest.path.unlink()
            r = await http.get(url, ssl=s.client)
            assert r.status == 409 and "--log" in (await r.json())["message"]
            folder = s.state / "team_web"
            folder.mkdir(parents=True)
            (folder / "serial.log").write_bytes(b"one\ntwo\nthree\n")
            r = await http.get(f"{s.url}/team/virtualmachines/web/consolelog?tail=2", ssl=s.client)
            assert r.status == 200 and await r.read() == b"two\nthree\n"

    asyncio.run(scenario())


def test_a_viewer_that_stops_reading_is_dropped_and_the_others_go_on(
    tmp_path: Path, certs: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(console, "VIEWER_BACKLOG", 4)

    async def scenario() -> None:
        async with running(tmp_path, *certs, {"team/web": vm()}) as s:
            port = console.SerialPort(str(s.guest.path), lambda p: None)
            await port.open()
            stuck, reading = port.add(), port.add()
            for _ in range(500):  # until the stand-in accepted the connection
                if s.guest.writers:
                    break
                await asyncio.sleep(0.01)
            for i in range(10):
                await s.guest.say(f"line {i}\n".encode())
                chunk = await asyncio.wait_for(reading.queue.get(), 5)
                assert chunk is not None and f"line {i}".encode() in chunk
            assert stuck not in port.viewers and "too slow" in stuck.ended
            assert reading in port.viewers
            port.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "path,status",
    [
        ("team/virtualmachines/db/console", 404),  # not bound here (another host's VM)
        ("other/virtualmachines/web/consolelog", 404),  # same name, another namespace
        ("team/virtualmachines/WEB/console", 404),  # no VM can have this name
        ("team/virtualmachines/a%5Fb/consolelog", 404),
        ("team/virtualmachines/web/consolelog?tail=x", 400),
    ],
)
def test_only_vms_bound_here_are_served(
    tmp_path: Path, certs: tuple[pki.CertificateAuthority, pki.CertificateAuthority],
    path: str, status: int,
) -> None:  # fmt: skip
    vms = {"team/web": vm(), "team/db": vm(host="host-b")}

    async def scenario() -> int:
        async with running(tmp_path, *certs, vms) as s, aiohttp.ClientSession() as http:
            r = await http.get(f"{s.url}/{path}", ssl=s.client)
            return r.status

    assert asyncio.run(scenario()) == status


def test_no_certificate_but_the_console_servers_gets_in(
    tmp_path: Path, certs: tuple[pki.CertificateAuthority, pki.CertificateAuthority]
) -> None:
    ca, _other = certs

    async def scenario() -> list[str]:
        outcomes = []
        async with (
            running(tmp_path, *certs, {"team/web": vm()}) as s,
            aiohttp.ClientSession() as http,
        ):
            url = f"{s.url}/team/virtualmachines/web/consolelog"
            plain = ssl.create_default_context(cafile=str(ca.cert_path))
            plain.check_hostname = False
            wrong_name = client_context(ca, ca.issue("tenant", "alice", client=True))
            for ctx in (plain, s.other, wrong_name):
                try:
                    r = await http.get(url, ssl=ctx)
                    outcomes.append(str(r.status))
                except aiohttp.ClientError as e:
                    outcomes.append(type(e).__name__)
        return outcomes

    no_cert, other_ca, wrong_name = asyncio.run(scenario())
    assert no_cert != "200" and other_ca != "200"  # refused in the TLS handshake
    assert wrong_name == "403"
