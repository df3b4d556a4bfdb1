"""HttpTransport: a keep-alive connection the server closed while idle is not reused."""
import socket
import threading
import time

import pytest

from sync.client import HttpTransport


class ClosingServer:
    """Answers one request per connection, then closes it without saying so (as an idle timeout does)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                body = b'{"ok": true}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self):
        self.sock.close()


def test_a_keep_alive_connection_closed_while_idle_is_replaced_before_use():
    server = ClosingServer()
    try:
        link = HttpTransport(f"http://127.0.0.1:{server.port}", timeout=5)
        for _ in range(3):
            response = link("GET", "/x", {}, None)
            assert response.status == 200 and response.body == {"ok": True}
            time.sleep(0.2)  # idle: the server's close reaches us
        assert server.connections == 3  # each stale connection was dropped before writing to it
        link.connection.close()
    finally:
        server.close()


def test_a_connection_that_cannot_be_made_is_an_error():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError):
        HttpTransport(f"http://127.0.0.1:{port}", timeout=5)("GET", "/x", {}, None)
