"""A TCP proxy on loopback that can cut the connections through it: the network fault of the
fault suite.

A process whose brokers are reached only through proxies (the local cluster's ``PROXIED``
listeners advertise the proxies' ports, so metadata sends the client back through them) can be
cut off from the cluster without touching the brokers or other clients: ``cut()`` resets every
connection and refuses new ones until ``restore()``, as a restarted load balancer or a host that
lost its network looks to the client. ``freeze()`` is the quieter fault, a partition: bytes stop
flowing both ways but no connection closes, so the client learns only from its own timeouts; after
``restore()`` the held bytes flow on, as TCP delivers them once a partition heals.

Threads, not asyncio: the proxy runs inside a test process that also drives workers, and a few
dozen connections of a Kafka client need nothing cleverer.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterable

from streamflow.dev.broker_config import HOST

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024


class TcpProxy:
    """Forwards ``HOST:listen_port`` to ``HOST:target_port`` until cut."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self.connections = 0
        """Connections accepted so far (cut ones included): a test can see traffic went through."""
        self.refused = 0
        """Connections refused while cut."""
        self._server = socket.create_server((HOST, listen_port), reuse_port=False, backlog=64)
        self._acceptor = threading.Thread(
            target=self._accept, name=f"proxy-{listen_port}", daemon=True
        )
        self._acceptor.start()

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until ``restore``."""
        self._cut.set()
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)
        log.info(
            "proxy %d -> %d cut (%d connections reset)",
            self.listen_port,
            self.target_port,
            len(doomed),
        )

    def freeze(self) -> None:
        """Stop forwarding in both directions, keeping every connection open (a partition)."""
        self._flowing.clear()
        log.info("proxy %d -> %d frozen", self.listen_port, self.target_port)

    def restore(self) -> None:
        self._cut.clear()
        self._flowing.set()
        log.info("proxy %d -> %d restored", self.listen_port, self.target_port)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._flowing.set()  # frozen pumps wake to find their sockets closed
        try:
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the acceptor (close alone does not)
        except OSError:
            pass
        self._server.close()
        self._acceptor.join(5)

    # -- threads ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self.connections += 1
            if self._cut.is_set():
                self.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=10)
            except OSError:
                _reset(client)  # the broker is down: the client sees what it would see directly
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump,
                    args=(source, sink),
                    daemon=True,
                    name=f"proxy-{self.listen_port}-pump",
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                if not self._flowing.is_set():
                    self._flowing.wait()  # unread bytes stay in the kernel: the sender stalls
                data = source.recv(_CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():  # frozen while this pump waited in recv
                    self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            for sock in (source, sink):
                _reset(sock)


_LINGER_ZERO = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to the peer. The read side is
    shut first: that is what wakes a pump thread blocked in ``recv`` on this socket."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class ProxyGroup:
    """One proxy per broker of a cluster: cutting the group cuts a client off the whole cluster."""

    def __init__(self, routes: Iterable[tuple[int, int]]) -> None:
        self.proxies = [TcpProxy(listen, target) for listen, target in routes]

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut()

    def freeze(self) -> None:
        for proxy in self.proxies:
            proxy.freeze()

    def restore(self) -> None:
        for proxy in self.proxies:
            proxy.restore()

    @property
    def connections(self) -> int:
        return sum(p.connections for p in self.proxies)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.close()

    def __enter__(self) -> ProxyGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
