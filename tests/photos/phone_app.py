"""The phone app as a process the backlog test can kill: push the outbox, upload the photos, repeat
until everything is acknowledged. All its state is in the SQLite store, so a restart resumes."""
import http.client
import sys
import time

from sync.client import HttpTransport, PhoneClient, SyncError


def main(base_url: str, store: str) -> int:
    phone = PhoneClient(HttpTransport(base_url, timeout=10), store)
    while True:
        try:
            phone.push()
            phone.upload_photos(chunk_bytes=512 * 1024)
            pending = phone.db.execute("SELECT count(*) FROM photos WHERE state = 'pending'").fetchone()[0]
            if not phone.outbox() and not pending:
                return 0
        except (OSError, http.client.HTTPException) as exc:  # the link dropped: try again
            print("network:", type(exc).__name__, flush=True)
        except SyncError as exc:
            if exc.status < 500:
                raise
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
