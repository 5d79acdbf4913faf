"""A real S3 API server on 127.0.0.1 (moto's), behind a fault-injecting TCP proxy.

Tests talk to S3 through boto3 over HTTP like any user would; the proxy sits
on the wire so a test can make the server drop connections or answer 500s
for a while, then come back.
"""

from __future__ import annotations

import socket
import socketserver
import threading


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultProxy:
    """Forwards TCP to upstream; `mode` is "pass", "down" (drop connections) or "error500"."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.mode = "pass"
        self.faults_left = 0  # with a fault mode: this many connections, then back to "pass"
        self.faulted = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy._handle(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, mode: str, connections: int = 10**9) -> None:
        with self._lock:
            self.mode, self.faults_left, self.faulted = mode, connections, 0

    def heal(self) -> None:
        self.fail("pass", 0)

    def _take_mode(self) -> str:
        with self._lock:
            if self.mode != "pass" and self.faults_left > 0:
                self.faults_left -= 1
                self.faulted += 1
                return self.mode
            self.mode = "pass"
            return "pass"

    def _handle(self, client: socket.socket) -> None:
        mode = self._take_mode()
        if mode == "down":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # a reset: the server vanished mid-conversation
            return
        if mode == "error500":
            client.recv(65536)
            body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                           + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            client.close()
            return
        upstream = socket.create_connection(self.upstream)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
