"""Every configuration key the app reads, with its default. Override with GRIDAPP_<KEY> env vars."""
from pathlib import Path


class Defaults:
    # Required in production: set GRIDAPP_SECRET_KEY. The factory refuses to start without one.
    SECRET_KEY = None
    SQLALCHEMY_DATABASE_URI = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp"
    # pre_ping survives a database restart; a pool is mandatory (a connection costs ~17 ms, PERF.md §a).
    SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 10}
    REDIS_URL = "redis://127.0.0.1:6379/0"

    # argon2id cost (argon2-cffi defaults); tests lower them to keep the suite fast.
    ARGON2_TIME_COST = 3
    ARGON2_MEMORY_KIB = 65536

    # Every response says how long the app took (`Server-Timing: app;dur=<ms>`, gridapp/server_timing.py).
    SERVER_TIMING = True

    # Bearer tokens for API clients (POST /api/v1/auth/token).
    TOKEN_TTL_SECONDS = 12 * 3600

    # Request bodies larger than this are refused with 413 before they are read.
    MAX_CONTENT_LENGTH = 16 * 1024 * 1024

    # The catalogue used when a client names a category by kind and code only.
    DEFAULT_CATEGORY_STANDARD = "GB/T 47678.5-2026"

    # Pages of GeoJSON cells: default and largest page size.
    CELLS_PAGE_DEFAULT = 500
    CELLS_PAGE_MAX = 5000

    # Offline sync (docs/sync-protocol.md); GET /api/v1/sync/config advertises these.
    DEVICE_ACCESS_TTL_SECONDS = 15 * 60
    DEVICE_REFRESH_TTL_SECONDS = 60 * 24 * 3600
    SYNC_MAX_BATCH_MUTATIONS = 200
    SYNC_MAX_INFLATED_BYTES = 8 * 1024 * 1024  # a gzip body may not inflate beyond this
    SYNC_PULL_DEFAULT_LIMIT = 500
    SYNC_PULL_MAX_LIMIT = 1000
    SYNC_SCOPE_GRACE_DAYS = 30  # pending work from cells a worker lost is accepted this long
    SYNC_UNKNOWN_INCIDENT_DAYS = 7  # an update whose incident never arrives is retried this long
    SYNC_BULK_PUSH = True  # plain creates of a batch set-based (sync/bulk.py); False: one by one (tests compare)

    # Dispatch (services/workflow.py, jobs/dispatch.py).
    WEBHOOK_TIMEOUT_SECONDS = 5
    OUTBOX_SWEEP_AFTER_SECONDS = 30  # an outbox message or notification older than this without a job is re-enqueued
    # A drain job that ran out of messages waits this long for the next one (woken through Redis) before it
    # ends: under a steady trickle one job serves many reports instead of paying RQ's per-job cost for each.
    OUTBOX_DRAIN_LINGER_SECONDS = 1.0
    DUE_SOON_WARNING_SECONDS = 3600  # warn the squad this long before a deadline
    # A new report this close to an open case of the same category, this soon after it, is a likely duplicate.
    DUPLICATE_DISTANCE_M = 50
    DUPLICATE_WINDOW_HOURS = 72

    # Photos (docs/photos.md). Storage: "file" (under PHOTO_STORAGE_DIR) or "s3" (an S3-compatible bucket).
    PHOTO_STORAGE = "file"
    PHOTO_STORAGE_DIR = str(Path(__file__).resolve().parent.parent / "var" / "photos")
    PHOTO_S3_BUCKET = "gridapp-photos"
    PHOTO_S3_ENDPOINT_URL = None  # e.g. http://minio.local:9000; None means AWS
    PHOTO_S3_REGION = None
    PHOTO_S3_ACCESS_KEY = None  # None: boto3's usual credential chain (env, files, instance role)
    PHOTO_S3_SECRET_KEY = None
    PHOTO_MAX_BYTES = 25 * 1024 * 1024  # one photo; a larger Upload-Length is refused with 413
    PHOTO_MAX_CHUNK_BYTES = 8 * 1024 * 1024  # one PATCH body
    PHOTO_MAX_PIXELS = 40_000_000  # decoded width × height; above it the photo is refused (decompression bombs)
    PHOTO_UPLOAD_EXPIRY_HOURS = 14 * 24  # an upload untouched this long is expired and collected
    PHOTO_ORPHAN_DAYS = 30  # a verified blob no incident declares is kept this long for its report to arrive
    PHOTO_DISPLAY_PX = 1600  # longest side of the display image
    PHOTO_THUMB_PX = 320  # longest side of the thumbnail
    # The squad's "submit_result" and the worker's "self_handle" need an after-handling photo.
    WORKFLOW_REQUIRE_AFTER_PHOTO = True
    # Exports (docs/exports.md): above this many rows a direct download is refused in favour of a job;
    # job files live in EXPORT_DIR and their signed links (and the files) expire after EXPORT_TTL_SECONDS.
    EXPORT_MAX_DIRECT_ROWS = 50_000
    EXPORT_DIR = "/tmp/gridapp-exports"
    EXPORT_TTL_SECONDS = 24 * 3600
    # Evaluation (docs/evaluation.md): a check (核查) is on time when done within this many hours of the
    # request; a dispatch when made within this many hours of registration.
    EVALUATION_CHECK_HOURS = 24
    EVALUATION_DISPATCH_HOURS = 2

    # Display time zone (storage is always UTC).
    DISPLAY_TIMEZONE = "Asia/Shanghai"

    # RQ queues the worker listens on, in priority order; the scheduler enqueues periodic jobs.
    RQ_QUEUES = ["default"]
    SCHEDULER_INTERVAL_SECONDS = 60

    # Dashboard (gridapp/dashboard/, docs/dashboard.md): session cookie flags and live-update polling.
    # Secure by default (serve it over HTTPS); browsers also accept it on http://127.0.0.1 and localhost.
    SESSION_COOKIE_NAME = "gridapp_session"
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    PERMANENT_SESSION_LIFETIME = 12 * 3600  # one shift
    DASHBOARD_POLL_SECONDS = 5

    # flask-smorest / OpenAPI document at /api/v1/openapi.json
    API_TITLE = "gridapp"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api/v1"
    OPENAPI_JSON_PATH = "openapi.json"
    # Every operation needs a bearer token unless it says `security: []` (the public ones).
    API_SPEC_OPTIONS = {"security": [{"bearerAuth": []}]}
