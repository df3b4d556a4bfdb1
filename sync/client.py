"""The reference phone client: a local store (SQLite, as on a phone), an outbox, push, pull and verify.

No Flask inside: it talks HTTP (or any `transport`) to a running server. Used by the tests, the
benchmarks and `flask sync simulate`, and as the executable form of docs/sync-protocol.md.
"""
import base64
import gzip
import hashlib
import http.client
import json
import os
import select
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from sync import protocol as p

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS outbox (device_seq INTEGER PRIMARY KEY, mutation_id TEXT UNIQUE, incident_id TEXT,
                                   body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, version INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, incident_id TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS categories (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (mutation_id TEXT PRIMARY KEY, result TEXT NOT NULL);
-- Photos wait here until their declaring mutation has left the outbox (reports land before photos);
-- state: pending | done | refused. upload_url is the tus upload to resume (with HEAD).
CREATE TABLE IF NOT EXISTS photos (attachment_id TEXT PRIMARY KEY, incident_id TEXT, device_seq INTEGER,
                                   path TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, type TEXT NOT NULL,
                                   state TEXT NOT NULL DEFAULT 'pending', upload_url TEXT, problem TEXT);
"""
TUS_VERSION = "1.0.0"
# Answers that mean the photo's bytes will never be accepted: stop trying, keep the file, tell the worker.
PHOTO_REFUSALS = ("photo.not_an_image", "photo.invalid_image", "photo.too_many_pixels", "photo.hash_mismatch",
                  "payload_too_large")


class SyncError(Exception):
    """The server answered with a problem the client cannot handle by retrying."""

    def __init__(self, status: int, problem: dict):
        super().__init__(f"{status} {problem.get('code')}: {problem.get('message')}")
        self.status, self.problem = status, problem


@dataclass
class Response:
    status: int
    body: dict | list | None
    headers: dict = field(default_factory=dict)  # lower-case names

    def header(self, name: str, default=None):
        return self.headers.get(name.lower(), default)


class WsgiTransport:
    """Send the client's requests straight into an app in the same process, through its test client
    (`app.test_client()`, as Flask gives): the server's code path without a socket, for tests and profiling."""

    def __init__(self, app):
        self.client = app.test_client()
        self.calls = []

    def __call__(self, method: str, path: str, headers: dict, body: bytes | None) -> Response:
        self.calls.append((method, path))
        response = self.client.open(path, method=method, headers=headers, data=body)
        data = response.get_data()
        if response.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return Response(response.status_code, json.loads(data) if data else None,
                        {name.lower(): value for name, value in response.headers.items()})


class HttpTransport:
    """Plain HTTP/1.1 with gzip both ways, one keep-alive connection, reconnecting after errors."""

    def __init__(self, base_url: str, timeout: float = 30):
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self.connection = None

    def __call__(self, method: str, path: str, headers: dict, body: bytes | None) -> Response:
        if self.connection is not None and _dropped(self.connection):
            self.connection.close()  # the server closed it while idle (its keep-alive timeout): start afresh
            self.connection = None
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            raw = self.connection.getresponse()
            data = raw.read()
            if raw.getheader("Content-Encoding") == "gzip":
                data = gzip.decompress(data)
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise
        return Response(raw.status, json.loads(data) if data else None,
                        {name.lower(): value for name, value in raw.getheaders()})


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """Tell whether an idle keep-alive connection was closed by the server (readable at rest means EOF).

    As urllib3 does: checked before reuse, so a stale connection is never written to. A request is
    never sent twice by the transport: whether to repeat one is the protocol's decision.
    """
    return connection.sock is not None and bool(select.select([connection.sock], [], [], 0)[0])


def file_sha256(path: str) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in chunks."""
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as src:
        while chunk := src.read(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


class PhoneClient:
    """One app install of one grid worker. All state lives in the SQLite file, so a killed app resumes."""

    def __init__(self, transport, store_path: str, clock=None):
        self.transport = transport
        self.db = sqlite3.connect(store_path)
        self.db.executescript(SCHEMA)
        self.clock = clock or (lambda: datetime.now(UTC))
        if self._meta("install_id") is None:
            self._set_meta("install_id", uuid.uuid4().hex)

    # --- local state ----------------------------------------------------------------------------------
    def _meta(self, key, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def _set_meta(self, key, value):
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        self.db.commit()

    @property
    def device_id(self):
        return self._meta("device_id")

    def incidents(self) -> dict[str, dict]:
        """The server's copy of each incident in scope: id → {version, data}."""
        return {i: {"version": v, "data": json.loads(d)} for i, v, d in self.db.execute("SELECT * FROM incidents")}

    def notes(self) -> dict[str, dict]:
        return {i: json.loads(d) for i, _, d in self.db.execute("SELECT * FROM notes")}

    def outbox(self) -> list[dict]:
        return [json.loads(b) for (b,) in self.db.execute("SELECT body FROM outbox ORDER BY device_seq")]

    def results(self) -> dict[str, dict]:
        """The terminal result of every mutation this phone sent, by mutation_id."""
        return {m: json.loads(r) for m, r in self.db.execute("SELECT * FROM results")}

    def photos(self) -> dict[str, dict]:
        """This phone's photos by attachment_id: incident, path, sha256, size, type, state, problem."""
        rows = self.db.execute("SELECT attachment_id, incident_id, path, sha256, size, type, state, problem FROM photos")
        keys = ("incident_id", "path", "sha256", "size", "type", "state", "problem")
        return {row[0]: dict(zip(keys, row[1:])) for row in rows}

    def _enqueue(self, body: dict, photos: list[dict] | None = None) -> dict:
        seq = self._meta("next_seq", 1)
        body = {"mutation_id": str(uuid.uuid4()), "device_seq": seq, **body,
                "scope_epoch": self._meta("scope", {}).get("epoch"), "created_at_device": self.clock().isoformat()}
        # The mutation, its photos and the sequence number are saved together: a crash loses none of them.
        with self.db:
            self.db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)",
                            (seq, body["mutation_id"], body["incident_id"], json.dumps(body)))
            for photo in photos or ():
                self.db.execute("INSERT INTO photos (attachment_id, incident_id, device_seq, path, sha256, size, type) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)", (photo["attachment_id"], body["incident_id"], seq,
                                                                 photo["path"], photo["sha256"], photo["size"],
                                                                 photo["type"]))
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (json.dumps(seq + 1),))
        return body

    @staticmethod
    def _declare(photos) -> list[dict]:
        """Hash the photo files: [(path, type), ...] or [path, ...] → declarations with their paths."""
        out = []
        for item in photos or ():
            path, photo_type = (item, "report") if isinstance(item, str) else item
            sha256, size = file_sha256(path)
            out.append({"attachment_id": str(uuid.uuid4()), "sha256": sha256, "size": size, "type": photo_type,
                        "path": os.path.abspath(path)})
        return out

    @staticmethod
    def _wire(photos: list[dict]) -> list[dict]:
        return [{k: v for k, v in photo.items() if k != "path"} for photo in photos]

    # --- what a worker does offline ---------------------------------------------------------------------
    def report(self, category: str, description: str, lon: float, lat: float, crs: str = "wgs84",
               accuracy: float | None = None, incident_id: str | None = None, photos=None,
               party: dict | None = None) -> str:
        """Save a new report in the outbox (works offline); return its client-minted id.

        `photos`: file paths (type "report") or (path, type) pairs; they are declared by hash in the
        report and uploaded after the server has acknowledged it. `party`: the 当事人's {name, phone,
        id_number} when the worker recorded one.
        """
        incident_id = incident_id or str(uuid.uuid4())
        declared = self._declare(photos)
        data = {"category": category, "description": description,
                "location": {"lon": lon, "lat": lat, "crs": crs}, "gps_accuracy_m": accuracy}
        if party:
            data["party"] = party
        body = {"type": "incident.create", "incident_id": incident_id, "data": data}
        if declared:
            body["photos"] = self._wire(declared)
        self._enqueue(body, declared)
        return incident_id

    def add_photos(self, incident_id: str, photos) -> dict:
        """Declare more photos on an incident (e.g. before/after handling); uploaded after the ack."""
        declared = self._declare(photos)
        return self._enqueue({"type": "photo.add", "incident_id": incident_id, "photos": self._wire(declared)},
                             declared)

    def local_view(self, incident_id: str) -> dict:
        """The incident as the worker sees it: the server's copy with this phone's pending changes on top."""
        local = self.incidents().get(incident_id)
        view = dict(local["data"]) if local else {}
        for body in self.outbox():
            if body["incident_id"] != incident_id:
                continue
            if body["type"] == "incident.create":
                view.update(body["data"])
            elif body["type"] == "incident.update":
                view.update({field: change["to"] for field, change in body["changes"].items()})
        return view

    def edit(self, incident_id: str, **new_values) -> dict:
        """Change fields of an incident; `from` is the value this phone shows now (three-way merge), so a
        second offline edit of a field builds on the first instead of conflicting with it."""
        local = self.incidents().get(incident_id)
        base = self.local_view(incident_id)
        changes = {f: {"from": base.get(f), "to": v} for f, v in new_values.items()}
        return self._enqueue({"type": "incident.update", "incident_id": incident_id,
                              "base_version": local["version"] if local else 1, "changes": changes})

    def add_note(self, incident_id: str, text: str) -> str:
        note_id = str(uuid.uuid4())
        self._enqueue({"type": "note.add", "incident_id": incident_id, "note_id": note_id, "text": text})
        return note_id

    # --- talking to the server -------------------------------------------------------------------------
    def _call(self, method: str, path: str, body=None, query=None, auth=True, compress=False) -> Response:
        headers = {"Accept-Encoding": "gzip", "X-Device-Time": self.clock().isoformat()}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
            if compress:
                payload, headers["Content-Encoding"] = gzip.compress(payload), "gzip"
        if auth:
            headers["Authorization"] = f"Bearer {self._meta('access_token')}"
        path = path + ("?" + urlencode(query) if query else "")
        response = self.transport(method, path, headers, payload)
        if auth and response.status == 401:
            self._refresh()
            headers["Authorization"] = f"Bearer {self._meta('access_token')}"
            response = self.transport(method, path, headers, payload)
        if response.status == 403 and response.body and response.body.get("code") == "sync.device_revoked":
            self._wipe()
        if response.status >= 400:
            raise SyncError(response.status, response.body or {})
        return response

    def register(self, username: str, password: str) -> dict:
        body = {"username": username, "password": password, "install_id": self._meta("install_id"),
                "platform": "reference-client", "app_version": "1.0"}
        tokens = self._call("POST", "/api/v1/devices/register", body, auth=False).body
        self._save_tokens(tokens)
        return tokens

    def _save_tokens(self, tokens: dict) -> None:
        with self.db:
            for key in ("device_id", "access_token", "refresh_token"):
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(tokens[key])))

    def _refresh(self) -> None:
        self._save_tokens(self._call("POST", "/api/v1/devices/token",
                                     {"refresh_token": self._meta("refresh_token")}, auth=False).body)

    def _wipe(self) -> None:
        with self.db:
            for table in ("incidents", "notes", "categories"):
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("DELETE FROM meta WHERE key IN ('cursor', 'scope', 'access_token', 'refresh_token')")

    def push(self, batch_size: int = 100, compress: bool = True) -> dict:
        """Send the outbox oldest first; drop items with a terminal result; keep `retry` ones."""
        counts: dict[str, int] = {}
        while True:
            rows = self.db.execute("SELECT device_seq, body FROM outbox ORDER BY device_seq LIMIT ?",
                                   (batch_size,)).fetchall()
            if not rows:
                return counts
            batch = {"protocol_version": p.PROTOCOL_VERSION, "app_version": "1.0",
                     "mutations": [json.loads(b) for _, b in rows]}
            results = self._call("POST", "/api/v1/sync/mutations", batch, compress=compress).body["results"]
            retried = 0
            with self.db:
                for (seq, _), result in zip(rows, results, strict=True):
                    counts[result["status"]] = counts.get(result["status"], 0) + 1
                    if result["status"] in p.TERMINAL_STATUSES:
                        self.db.execute("DELETE FROM outbox WHERE device_seq = ?", (seq,))
                        self.db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)",
                                        (result["mutation_id"] or str(seq), json.dumps(result)))
                    else:
                        retried += 1
            if retried == len(rows):
                return counts  # everything left must wait (its incident has not arrived)

    def pull(self, limit: int | None = None) -> int:
        """Fetch pages until caught up; each page is applied with its cursor in one local transaction."""
        pages = 0
        while True:
            query = {k: v for k, v in (("cursor", self._meta("cursor")), ("limit", limit)) if v is not None}
            page = self._call("GET", "/api/v1/sync/changes", query=query).body
            with self.db:
                for change in page["changes"]:
                    self._apply(change)
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)", (json.dumps(page["next_cursor"]),))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('scope', ?)", (json.dumps(page["scope"]),))
            pages += 1
            if not page["has_more"]:
                return pages

    def _apply(self, change: dict) -> None:
        table = {"incident": "incidents", "note": "notes", "category": "categories"}[change["entity"]]
        if change["op"] in ("evict", "delete"):
            self.db.execute(f"DELETE FROM {table} WHERE id = ?", (change["id"],))
            if table == "incidents":
                self.db.execute("DELETE FROM notes WHERE incident_id = ?", (change["id"],))
        elif table == "incidents":
            local = self.db.execute("SELECT version FROM incidents WHERE id = ?", (change["id"],)).fetchone()
            if local is None or change["version"] > local[0]:  # an echo or a re-sent page changes nothing
                self.db.execute("INSERT OR REPLACE INTO incidents VALUES (?, ?, ?)",
                                (change["id"], change["version"], json.dumps(change["data"])))
        elif table == "notes":
            self.db.execute("INSERT OR REPLACE INTO notes VALUES (?, ?, ?)",
                            (change["id"], change["data"]["incident_id"], json.dumps(change["data"])))
        else:
            self.db.execute("INSERT OR REPLACE INTO categories VALUES (?, ?)", (change["id"], json.dumps(change["data"])))

    def buckets(self) -> dict[str, str]:
        """Digest per bucket (a scope cell's code, or 'own' for the rest) of the local (id, version) pairs."""
        cells = set(self._meta("scope", {}).get("cells", []))
        grouped: dict[str, list] = {}
        for incident_id, record in self.incidents().items():
            code = record["data"].get("cell_code")
            grouped.setdefault(code if code in cells else "own", []).append((incident_id, record["version"]))
        return {bucket: p.record_digest(pairs) for bucket, pairs in grouped.items()}

    def verify(self, repair: bool = True) -> dict:
        """Ask the server whether the local copy matches; on a mismatch, repair from its manifests."""
        outcome = self._call("POST", "/api/v1/sync/verify", {"cursor": self._meta("cursor"),
                                                             "buckets": self.buckets()}).body
        if outcome["status"] == "mismatch" and repair:
            with self.db:
                cells = set(self._meta("scope", {}).get("cells", []))
                for bucket, manifest in outcome["manifests"].items():
                    keep = {incident_id for incident_id, _ in manifest}
                    for incident_id, record in self.incidents().items():
                        code = record["data"].get("cell_code")
                        if (code if code in cells else "own") == bucket and incident_id not in keep:
                            self.db.execute("DELETE FROM incidents WHERE id = ?", (incident_id,))
                    for incident_id, version in manifest:  # force a re-send of what is wrong or missing
                        self.db.execute("DELETE FROM incidents WHERE id = ? AND version <> ?", (incident_id, version))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('cursor', ?)",
                                (json.dumps(outcome["repair_cursor"]),))
            self.pull()
        return outcome

    # --- photos (tus) ------------------------------------------------------------------------------------
    def _tus(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None) -> Response:
        headers = {"Tus-Resumable": TUS_VERSION, "X-Device-Time": self.clock().isoformat(), **(headers or {}),
                   "Authorization": f"Bearer {self._meta('access_token')}"}
        response = self.transport(method, path, headers, body)
        if response.status == 401:
            self._refresh()
            headers["Authorization"] = f"Bearer {self._meta('access_token')}"
            response = self.transport(method, path, headers, body)
        return response

    def upload_photos(self, chunk_bytes: int = 256 * 1024, checksum: bool = True) -> dict:
        """Upload the photos whose report (or photo.add) the server has acknowledged, oldest first,
        resuming each from the server's offset (HEAD). Network errors propagate: call again later."""
        counts = {"uploaded": 0, "already_there": 0, "refused": 0}
        rows = self.db.execute(
            "SELECT attachment_id, path, sha256, size, upload_url FROM photos WHERE state = 'pending' "
            "AND device_seq NOT IN (SELECT device_seq FROM outbox) ORDER BY device_seq, rowid").fetchall()
        for attachment_id, path, sha256, size, upload_url in rows:
            outcome, problem = self._upload_one(attachment_id, path, sha256, size, upload_url, chunk_bytes, checksum)
            with self.db:
                self.db.execute("UPDATE photos SET state = ?, problem = ?, upload_url = NULL WHERE attachment_id = ?",
                                ("refused" if outcome == "refused" else "done", problem, attachment_id))
            counts[outcome] += 1
        return counts

    def _upload_one(self, attachment_id, path, sha256, size, url, chunk_bytes, checksum) -> tuple[str, str | None]:
        offset = None
        if url:
            head = self._tus("HEAD", url)
            offset = int(head.header("Upload-Offset")) if head.status == 200 else None
        if offset is None:
            metadata = "sha256 " + base64.b64encode(sha256.encode()).decode()
            created = self._tus("POST", "/api/v1/photos/uploads", {"Upload-Length": str(size),
                                                                 "Upload-Metadata": metadata})
            if created.status == 200:
                return "already_there", None
            if created.status != 201:
                return self._photo_problem(created)
            url, offset = urlsplit(created.header("Location")).path, 0
            with self.db:
                self.db.execute("UPDATE photos SET upload_url = ? WHERE attachment_id = ?", (url, attachment_id))
        with open(path, "rb") as src:
            while offset < size:
                src.seek(offset)
                chunk = src.read(chunk_bytes)
                headers = {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
                if checksum:
                    headers["Upload-Checksum"] = "sha256 " + base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                answer = self._tus("PATCH", url, headers, chunk)
                if answer.status == 204:
                    offset = int(answer.header("Upload-Offset"))
                elif answer.status == 409:  # the server has a different offset: continue from there
                    offset = answer.body["details"]["current_offset"]
                elif answer.status == 460:
                    continue  # the chunk was damaged on the way: send it again
                elif answer.status in (404, 410):  # finished elsewhere, expired or collected: start again
                    with self.db:
                        self.db.execute("UPDATE photos SET upload_url = NULL WHERE attachment_id = ?", (attachment_id,))
                    return self._upload_one(attachment_id, path, sha256, size, None, chunk_bytes, checksum)
                else:
                    return self._photo_problem(answer)
        return "uploaded", None

    def _photo_problem(self, response: Response) -> tuple[str, str]:
        code = (response.body or {}).get("code")
        if code in PHOTO_REFUSALS:
            return "refused", code
        raise SyncError(response.status, response.body or {})

    def missing_photos(self) -> list[dict]:
        """What the server still lacks of the photos this user declared (from any install)."""
        return self._call("GET", "/api/v1/photos/missing").body

    def adopt_missing(self, paths) -> int:
        """After a reinstall: queue those of these files (the phone's gallery) that the server still lacks."""
        wanted = {m["sha256"]: m for m in self.missing_photos()}
        adopted = 0
        with self.db:
            for path in paths:
                sha256, size = file_sha256(path)
                missing = wanted.pop(sha256, None)
                if missing is None:
                    continue
                self.db.execute("INSERT OR IGNORE INTO photos (attachment_id, incident_id, device_seq, path, sha256, "
                                "size, type) VALUES (?, ?, 0, ?, ?, ?, ?)",
                                (missing["attachment_id"], missing["incident_id"], os.path.abspath(path), sha256, size,
                                 missing["type"]))
                adopted += 1
        return adopted

    def sync(self) -> None:
        """Push everything, upload the photos of acknowledged reports, then pull until caught up."""
        self.push()
        self.upload_photos()
        self.pull()
