"""The fault suite's TCP proxy, against a real echo server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from streamflow.dev.broker_config import HOST, allocate_ports
from streamflow.dev.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socket.create_server((HOST, 0))
    port = server.getsockname()[1]

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass  # the proxy reset it: what the test is about

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield port
    server.shutdown(socket.SHUT_RDWR)
    server.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[TcpProxy]:
    p = TcpProxy(allocate_ports(1)[0], echo_port)
    yield p
    p.close()


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection((HOST, proxy.listen_port), timeout=5)
    return sock


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def test_bytes_flow_both_ways_through_the_proxy(proxy: TcpProxy) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one chunk each way
    with _connect(proxy) as sock:
        assert _echo(sock, payload) == payload
    assert proxy.connections == 1


def test_a_cut_resets_open_connections_and_refuses_new_ones_until_restored(proxy: TcpProxy) -> None:
    sock = _connect(proxy)
    assert _echo(sock, b"before") == b"before"
    proxy.cut()
    with pytest.raises(OSError):  # reset by peer, or a read of nothing then a broken pipe
        for _ in range(50):
            sock.sendall(b"x")
            if sock.recv(10) == b"":
                raise ConnectionResetError("closed")
            time.sleep(0.01)
    sock.close()
    with pytest.raises(OSError), _connect(proxy) as refused:  # accepted, reset: nothing passes
        refused.sendall(b"y")
        if refused.recv(10) == b"":
            raise ConnectionResetError("closed")
    assert proxy.refused >= 1
    proxy.restore()
    with _connect(proxy) as again:
        assert _echo(again, b"after") == b"after"


def test_a_freeze_holds_bytes_without_closing_and_delivers_them_once_restored(
    proxy: TcpProxy,
) -> None:
    with _connect(proxy) as sock:
        assert _echo(sock, b"warm") == b"warm"
        proxy.freeze()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)  # nothing crosses a partition, and nothing closes either
        proxy.restore()
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
