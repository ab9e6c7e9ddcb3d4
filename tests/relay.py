"""A TCP relay to one address: what `kubectl port-forward` is to a client (a tunnel from a local
port to one pod port), without a kubelet streaming API. Each accepted connection gets its own
connection to the target; bytes are copied both ways until either side closes.

    with Relay("127.0.5.1", 9092, port=0) as relay:
        KafkaProducer(bootstrap_servers=f"localhost:{relay.port}")
"""
from __future__ import annotations

import socket
import threading


class Relay:
    def __init__(self, target_host: str, target_port: int, port: int = 0, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._server = socket.create_server((host, port), reuse_port=False)
        self.port = self._server.getsockname()[1]
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._accept = threading.Thread(target=self._accept_loop, daemon=True, name="relay-accept")

    def start(self) -> "Relay":
        self._accept.start()
        return self

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def retarget(self, host: str, port: int) -> None:
        """New connections go to another address (a port-forward restarted to another pod)."""
        self.target = (host, port)

    def close(self) -> None:
        """Stops accepting and cuts every relayed connection."""
        self._closed = True
        try:
            self._server.close()
        except OSError:
            pass
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(src, dst), daemon=True, name="relay-pipe").start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(1 << 16)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # Half-close: the other direction may still carry a response.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
