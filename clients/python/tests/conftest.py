"""Fixtures for the tests against a real crm server.

Run them through scripts/py-client.sh (which uses scripts/with-server.sh), or
by hand with CRM_GRPC (host:port) and CRM_TOKEN set; CRM_BIN (default
target/debug/crm, relative to the repository root) mints other tenants' tokens.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

import crm_client

REPO = Path(__file__).resolve().parents[3]


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the tests via scripts/py-client.sh")
    return value


@pytest.fixture(scope="session")
def target() -> str:
    return _env("CRM_GRPC")


@pytest.fixture(scope="session")
def client(target: str) -> Iterator[crm_client.Client]:
    with crm_client.connect(target, _env("CRM_TOKEN")) as c:
        yield c


def crm_bin() -> Path:
    bin_path = Path(os.environ.get("CRM_BIN") or "target/debug/crm")
    return bin_path if bin_path.is_absolute() else REPO / bin_path


@pytest.fixture(scope="session")
def mint_token() -> Callable[[str, str], str]:
    bin_path = crm_bin()

    def mint(tenant: str, sub: str = "py-tester") -> str:
        out = subprocess.run(
            [str(bin_path), "token", "--tenant", tenant, "--sub", sub],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()

    return mint


@pytest.fixture
def tag() -> str:
    """A tag unique to one test, to filter its own records out of the shared tenant."""
    return "t" + uuid.uuid4().hex[:12]


class Proxy:
    """A TCP proxy in front of the gRPC port, run by an asyncio loop on a
    thread of its own. ``drop()`` resets every connection through it (RST, as
    a crashed peer or a load balancer would); while ``refuse`` is true, new
    connections are reset at once (the server looks unreachable).
    ``received`` counts the bytes passed from the server to the client;
    ``upstream`` (host:port) is where new connections go."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.refuse = False
        self.received = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        started.set()
        self._loop.run_forever()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            self._reset(writer)
            return
        host, port = self.upstream.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            self._reset(writer)
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if dst is writer:
                        self.received += len(data)
                    dst.write(data)
                    await dst.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                self._reset(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def drop(self) -> None:
        async def reset_all() -> None:
            for w in list(self._writers):
                self._reset(w)
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(reset_all(), self._loop).result(5)

    def close(self) -> None:
        self.drop()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def proxy(target: str) -> Iterator[Proxy]:
    p = Proxy(target)
    try:
        yield p
    finally:
        p.close()


PG_BASE = os.environ.get("CRM_TEST_PG") or "postgres://postgres@127.0.0.1:5432"


class OwnServer:
    """A crm server of the test's own (``crm serve --dev``) on database ``db``
    (created by the server if missing), on free ports, with ``extra_env``
    added to its environment, so that a test can stop it or run it with other
    settings; ``stop()`` sends SIGTERM and waits for the exit."""

    def __init__(self, db: str, extra_env: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"{PG_BASE}/{db}",
            CRM_GRPC_ADDR="127.0.0.1:0",
            CRM_HTTP_ADDR="127.0.0.1:0",
            CRM_LOG_FORMAT="json",
            CRM_CHANGES_HEARTBEAT_SECS="1",
        )
        env.update(extra_env or {})
        self._proc = subprocess.Popen(
            [str(crm_bin()), "serve", "--dev"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._log: list[str] = []
        found = threading.Event()
        self.target = ""

        def drain() -> None:  # reads the log to its end, so the server never blocks on it
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                if not found.is_set():
                    self._log.append(line)
                    m = re.search(r'"grpc":"([0-9.]+:[0-9]+)"', line)
                    if m:
                        self.target = m.group(1)
                        found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        found.wait(60)
        if not self.target:
            self.stop()
            pytest.fail("crm serve did not start:\n" + "".join(self._log))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(60)


def drop_database(db: str) -> None:
    """Drops a scratch database and its (cluster-wide) roles, as with-server.sh does."""

    def psql(url: str, sql: str) -> str:
        out = subprocess.run(["psql", url, "-tAc", sql], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    roles = psql(f"{PG_BASE}/{db}", "SELECT array_to_string(crm_roles(), ',')")
    psql(f"{PG_BASE}/postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    if re.fullmatch(r"[a-z0-9_]+(,[a-z0-9_]+)*", roles):
        psql(f"{PG_BASE}/postgres", f"DROP ROLE IF EXISTS {roles}")
