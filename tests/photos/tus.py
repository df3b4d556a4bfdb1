"""A small tus client for tests, over real sockets: plain requests, and a PATCH cut after any byte."""
import base64
import hashlib
import http.client
import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

UPLOADS = "/api/v1/photos/uploads"


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def code(self):
        return (self.json() or {}).get("code")

    def header(self, name):
        return self.headers.get(name.lower())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata(digest: str) -> str:
    return "sha256 " + base64.b64encode(digest.encode()).decode()


def chunk_checksum(data: bytes) -> str:
    return "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()


class Tus:
    def __init__(self, base_url: str, token: str):
        parts = urlsplit(base_url)
        self.host, self.port, self.token = parts.hostname, parts.port, token

    def _headers(self, extra=None) -> dict:
        return {"Authorization": f"Bearer {self.token}", "Tus-Resumable": "1.0.0", **(extra or {})}

    def request(self, method, path, headers=None, body=None, tus=True) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            all_headers = self._headers(headers) if tus else {"Authorization": f"Bearer {self.token}", **(headers or {})}
            connection.request(method, path, body=body, headers=all_headers)
            raw = connection.getresponse()
            return Answer(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
        finally:
            connection.close()

    def create(self, digest: str, length: int) -> Answer:
        return self.request("POST", UPLOADS, {"Upload-Length": str(length), "Upload-Metadata": metadata(digest)})

    def head(self, url: str) -> Answer:
        return self.request("HEAD", url)

    def patch(self, url: str, offset: int, data: bytes, checksum: str | bool = True) -> Answer:
        headers = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
        if checksum:
            headers["Upload-Checksum"] = checksum if isinstance(checksum, str) else chunk_checksum(data)
        return self.request("PATCH", url, headers, data)

    def upload(self, data: bytes, digest: str | None = None, chunk: int = 1 << 20) -> Answer:
        """Create and send a whole file in chunks; return the last answer."""
        created = self.create(digest or sha256(data), len(data))
        if created.status != 201:
            return created
        url, offset, answer = created.header("Location"), 0, created
        while offset < len(data):
            answer = self.patch(url, offset, data[offset:offset + chunk])
            if answer.status != 204:
                return answer
            offset = int(answer.header("Upload-Offset"))
        return answer

    def cut_patch(self, url: str, offset: int, data: bytes, sent: int, checksum: bool = False) -> None:
        """Announce the whole chunk, send only its first `sent` bytes, and drop the connection."""
        head = [f"PATCH {url} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(data)}",
                "Content-Type: application/offset+octet-stream", f"Upload-Offset: {offset}"]
        head += [f"{k}: {v}" for k, v in self._headers().items()]
        if checksum:
            head.append(f"Upload-Checksum: {chunk_checksum(data)}")
        with socket.create_connection((self.host, self.port)) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:sent])
            sock.shutdown(socket.SHUT_RDWR)

    def announce_only(self, url: str, content_length: int) -> Answer:
        """Send a PATCH's headers with a huge Content-Length and no body; read what the server answers."""
        head = [f"PATCH {url} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {content_length}",
                "Content-Type: application/offset+octet-stream", "Upload-Offset: 0"]
        head += [f"{k}: {v}" for k, v in self._headers().items()]
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            response = http.client.HTTPResponse(sock)
            response.begin()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
