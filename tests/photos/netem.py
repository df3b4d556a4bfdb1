"""A loopback link for backlog tests: a TCP proxy that throttles both directions and cuts connections
at random points, like a 2G/3G link in the hills (only faster, to fit the test budget)."""
import random
import socket
import threading
import time


class FlakyLink:
    """Forward bytes to `upstream` at `rate` bytes/s per direction; after a random number of bytes
    (exponential, mean `mean_bytes_between_cuts`), drop the connection mid-stream."""

    def __init__(self, upstream_url: str, rate: float, mean_bytes_between_cuts: float, seed: int = 4):
        host, port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.rate, self.mean = rate, mean_bytes_between_cuts
        self.random = random.Random(seed)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.cuts = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _budget(self) -> int:
        with self._lock:
            return int(self.random.expovariate(1 / self.mean))

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open |= {downstream, upstream}
            budget = [self._budget()]  # shared by both directions of this connection
            for src, dst in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(src, dst, budget), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, budget: list) -> None:
        started, sent = time.monotonic(), 0
        try:
            while chunk := src.recv(65536):
                if budget[0] < len(chunk):
                    dst.sendall(chunk[:max(budget[0], 0)])
                    with self._lock:
                        self.cuts += 1
                    break
                budget[0] -= len(chunk)
                dst.sendall(chunk)
                sent += len(chunk)
                ahead = sent / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        except OSError:
            pass
        self._close(src, dst)

    def _close(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def close(self) -> None:
        self._close(self.listener)
        with self._lock:
            remaining = list(self._open)
        self._close(*remaining)
