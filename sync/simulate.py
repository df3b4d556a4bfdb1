"""Drive simulated phones against a running server: each registers, reports inside its cells, syncs, verifies.

No Flask inside: it is the reference client (`sync.client.PhoneClient` over `HttpTransport`) run N times,
one thread per phone. Used by `flask sync simulate` and by the sync benchmarks in bench/.

    summary = simulate("http://127.0.0.1:5000", [("qy_worker1", "demo-pass-2026")], 10, "/tmp/phones", seed=1)

Every loop is bounded: a phone makes exactly the reports asked for, its push stops when nothing is left or
everything left must wait, and its pull stops after `max_pages` pages.
"""
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sync.client import HttpTransport, PhoneClient, SyncError

STATUSES = ("applied", "merged", "duplicate", "quarantined", "retry")
DEFAULT_CATEGORY = "06010"  # 暴露垃圾, in the default catalogue
MAX_PAGES = 10_000


class RecordingTransport:
    """Wrap a transport: time every request and count the changes each pull page brought."""

    def __init__(self, inner):
        self.inner = inner
        self.requests: list[tuple[str, str, int, float]] = []  # method, path (no query), status, seconds
        self.pulled = 0

    def __call__(self, method, path, headers, body):
        start = time.perf_counter()
        status = 0
        try:
            response = self.inner(method, path, headers, body)
            status = response.status
        finally:
            self.requests.append((method, path.split("?", 1)[0], status, time.perf_counter() - start))
        if status == 200 and path.startswith("/api/v1/sync/changes") and isinstance(response.body, dict):
            self.pulled += len(response.body.get("changes", []))
        return response

    def seconds(self, method: str, path: str) -> list[float]:
        return [s for m, p, _, s in self.requests if m == method and p == path]


@dataclass
class Cell:
    """A cell a phone reports in: its code and its exterior ring (lon, lat pairs)."""

    code: str
    ring: list[tuple[float, float]]

    @classmethod
    def box(cls, code: str, west: float, south: float, east: float, north: float) -> "Cell":
        return cls(code, [(west, south), (east, south), (east, north), (west, north), (west, south)])


@dataclass
class Phone:
    index: int
    username: str
    client: PhoneClient
    transport: RecordingTransport
    cells: list[Cell] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    reports: int = 0
    edits: int = 0
    notes: int = 0
    counts: dict = field(default_factory=dict)
    verify: str | None = None
    error: str | None = None


# --- geometry: a random point strictly inside a cell ------------------------------------------------
def _inside(ring, x: float, y: float) -> bool:
    """Even-odd rule (ray casting) for a closed ring."""
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, ring[1:]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def random_point(cell: Cell, rng: random.Random, tries: int = 100) -> tuple[float, float]:
    """A uniform point inside the cell, kept off its edges (an edge point belongs to the lowest code)."""
    xs, ys = [x for x, _ in cell.ring], [y for _, y in cell.ring]
    west, east, south, north = min(xs), max(xs), min(ys), max(ys)
    margin_x, margin_y = (east - west) * 0.02, (north - south) * 0.02
    for _ in range(tries):
        x = rng.uniform(west + margin_x, east - margin_x)
        y = rng.uniform(south + margin_y, north - margin_y)
        if _inside(cell.ring, x, y):
            return x, y
    return (west + east) / 2, (south + north) / 2


# --- one phone ---------------------------------------------------------------------------------------
def start_phone(base_url: str, index: int, username: str, password: str, store_path: str, rng: random.Random,
                cells: list[Cell] | None = None, max_cells: int = 20, timeout: float = 120) -> Phone:
    """Register an install, pull once (categories and what is in scope), learn some of its cells' shapes.

    Without `cells`, up to `max_cells` of the scope's cells are fetched from GET /api/v1/grids/cells/<code>.
    """
    transport = RecordingTransport(HttpTransport(base_url, timeout=timeout))
    client = PhoneClient(transport, store_path)
    phone = Phone(index, username, client, transport)
    tokens = client.register(username, password)
    client.pull()
    phone.categories = sorted(
        json.loads(data)["code"] for (data,) in client.db.execute("SELECT data FROM categories")
        if json.loads(data).get("kind") == "event") or [DEFAULT_CATEGORY]
    if cells is None:
        codes = list(tokens["scope"]["cells"])
        rng.shuffle(codes)
        cells = []
        for code in sorted(codes[:max_cells]):
            feature = client._call("GET", f"/api/v1/grids/cells/{code}").body
            cells.append(Cell(code, [tuple(xy) for xy in feature["geometry"]["coordinates"][0]]))
    phone.cells = cells
    return phone


def make_reports(phone: Phone, count: int, rng: random.Random, label: str = "simulated") -> list[str]:
    """Save `count` new reports at random points of the phone's cells in its outbox (offline)."""
    if not phone.cells:
        raise ValueError(f"{phone.username} has no cells to report in")
    ids = []
    for number in range(count):
        cell = rng.choice(phone.cells)
        lon, lat = random_point(cell, rng)
        ids.append(phone.client.report(rng.choice(phone.categories),
                                       f"{label} report {number + 1} by {phone.username} in {cell.code}",
                                       lon, lat, accuracy=round(rng.uniform(3, 30), 1)))
    phone.reports += count
    return ids


def make_edits(phone: Phone, edits: int, notes: int, rng: random.Random, among: list[str] | None = None) -> None:
    """Edit descriptions and add notes to incidents the phone already holds (so `from` is what it saw)."""
    known = sorted(among if among is not None else phone.client.incidents())
    if not known:
        return
    # Distinct incidents: the reference client bases an edit on the copy it last pulled, so a second offline
    # edit of the same field would meet the first one on the server as a (client-applied) conflict.
    for number, incident_id in enumerate(rng.sample(known, min(edits, len(known)))):
        phone.client.edit(incident_id, description=f"edited offline ({number + 1}) by {phone.username}")
    for number in range(notes):
        phone.client.add_note(rng.choice(known), f"note {number + 1} from {phone.username}")
    phone.edits += min(edits, len(known))
    phone.notes += notes


def push(phone: Phone, batch_size: int = 100) -> dict:
    counts = phone.client.push(batch_size=batch_size)
    for status, n in counts.items():
        phone.counts[status] = phone.counts.get(status, 0) + n
    return counts


def pull(phone: Phone, max_pages: int = MAX_PAGES) -> int:
    pages = phone.client.pull()
    if pages > max_pages:
        raise RuntimeError(f"{phone.username}: pull took {pages} pages")
    return pages


def check(phone: Phone, attempts: int = 5) -> str:
    """Ask the server whether the phone's copy matches its scope (no repair: a mismatch is reported).

    `stale` means something was committed after the phone's last pull (anywhere: the counter is global),
    so the phone pulls again and asks again, at most `attempts` times.
    """
    for _ in range(attempts):
        phone.verify = phone.client.verify(repair=False)["status"]
        if phone.verify != "stale":
            break
        pull(phone)
    return phone.verify


def phone_summary(phone: Phone) -> dict:
    outbox = len(phone.client.outbox()) if phone.error is None else None
    return {
        "phone": phone.index, "username": phone.username, "device_id": phone.client.device_id,
        "reports": phone.reports, "edits": phone.edits, "notes": phone.notes,
        "pushed": sum(phone.counts.values()),
        **{status: phone.counts.get(status, 0) for status in STATUSES},
        "pulled": phone.transport.pulled, "local_incidents": len(phone.client.incidents()),
        "outbox_left": outbox, "verify": phone.verify,
        "ok": phone.error is None and phone.verify == "ok" and outbox == 0,
        "error": phone.error,
    }


# --- many phones -------------------------------------------------------------------------------------
def simulate(base_url: str, phones: list[tuple[str, str]], reports_per_phone: int, workdir, seed: int = 0, *,
             edits_per_phone: int = 0, notes_per_phone: int = 0, concurrency: int = 50, batch_size: int = 100,
             max_cells: int = 20, timeout: float = 120) -> dict:
    """Run each phone (username, password) in its own thread: register, pull, report, push, pull; then, once
    every phone is done (so no phone's check races another's writes), each pulls again and verifies.

    Edits and notes go to incidents the phone already held before reporting (none on a fresh scope).
    :returns: {"phones": [per-phone summary], "totals": {...}, "seconds": wall time, "ok": all phones ok}.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{int(time.time() * 1000)}-{threading.get_ident()}"
    store = [str(workdir / f"phone-{stamp}-{i}.sqlite") for i in range(len(phones))]

    def sync_one(index: int) -> Phone:
        username, password = phones[index]
        rng = random.Random(f"{seed}:{index}")
        phone = Phone(index, username, None, None)  # replaced once registered
        try:
            phone = start_phone(base_url, index, username, password, store[index], rng, max_cells=max_cells,
                                timeout=timeout)
            held = sorted(phone.client.incidents())
            make_reports(phone, reports_per_phone, rng)
            make_edits(phone, edits_per_phone, notes_per_phone, rng, among=held)
            push(phone, batch_size)
            pull(phone)
        except (SyncError, OSError, ValueError, RuntimeError, KeyError) as exc:
            phone.error = f"{type(exc).__name__}: {exc}"
        finally:
            if phone.client is not None:
                phone.client.db.close()  # SQLite handles stay in their thread; the store file is reopened
        return phone

    def check_one(phone: Phone) -> dict:
        if phone.client is None:
            return {"phone": phone.index, "username": phone.username, "ok": False, "error": phone.error}
        phone.client = PhoneClient(phone.transport, store[phone.index])
        try:
            if phone.error is None:
                pull(phone)
                check(phone)
        except (SyncError, OSError, ValueError, RuntimeError, KeyError) as exc:
            phone.error = f"{type(exc).__name__}: {exc}"
        try:
            return phone_summary(phone)
        finally:
            phone.client.db.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(phones)))) as pool:
        synced = list(pool.map(sync_one, range(len(phones))))
        results = list(pool.map(check_one, synced))
    seconds = time.perf_counter() - started
    keys = ("reports", "edits", "notes", "pushed", *STATUSES, "pulled")
    totals = {k: sum(r.get(k) or 0 for r in results) for k in keys}
    return {"phones": results, "totals": totals, "seconds": round(seconds, 3), "ok": all(r["ok"] for r in results)}


def format_table(summary: dict) -> str:
    """The summary as a plain-text table, one line per phone and a total line."""
    columns = ("phone", "username", "reports", "pushed", "applied", "merged", "duplicate", "quarantined", "retry",
               "pulled", "local_incidents", "verify", "ok")
    heads = ("#", "username", "reports", "pushed", "applied", "merged", "dup", "quarant.", "retry", "pulled",
             "local", "verify", "ok")
    rows = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in summary["phones"]]
    totals = summary["totals"]
    rows.append(["all", "", *(str(totals[c]) for c in columns[2:10]), "", "",
                 "yes" if summary["ok"] else "NO"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines += [f"{r['username']}: {r['error']}" for r in summary["phones"] if r.get("error")]
    lines.append(f"{len(summary['phones'])} phones in {summary['seconds']:.1f} s")
    return "\n".join(lines)
