"""The wire protocol's pure parts: versions, mutation types, statuses, hashing, signed cursors, digests."""
import base64
import hashlib
import hmac
import json
import math
import uuid

PROTOCOL_VERSION = 1
MUTATION_TYPES = ("incident.create", "incident.update", "note.add", "photo.add")

# Terminal item statuses: the phone deletes the outbox item. `retry` is the only non-terminal one.
APPLIED, MERGED, DUPLICATE, QUARANTINED, RETRY = "applied", "merged", "duplicate", "quarantined", "retry"
TERMINAL_STATUSES = (APPLIED, MERGED, DUPLICATE, QUARANTINED)

# Item codes (per mutation, inside a 200 response).
MUTATION_ID_REUSE = "mutation_id_reuse"  # same mutation_id, different body: the first one stands
DEVICE_SEQ_REUSE = "device_seq_reuse"  # a used (device, device_seq) with a new mutation_id: a cloned store
OUT_OF_SCOPE = "out_of_scope"  # the incident is outside the worker's scope (and grace)
VALIDATION_FAILED = "validation_failed"  # missing or wrong fields
UNSUPPORTED_TYPE = "unsupported_type"  # a mutation type this server does not know
ID_COLLISION = "id_collision"  # a client id already used by another mutation
UNKNOWN_INCIDENT = "unknown_incident"  # update/note before its create arrived (retry, then quarantine)
DEPENDS_ON_QUARANTINED = "depends_on_quarantined"  # an earlier mutation of the batch for this incident failed
INTEGRITY_ERROR = "integrity_error"  # the database refused the item repeatedly
ATTACHMENT_IMMUTABLE = "attachment_immutable"  # an attachment_id already declared with other bytes

CLOCK_SUSPECT_MS = 5 * 60 * 1000


class CursorInvalid(ValueError):
    """A cursor that was not issued by this server, or for another device."""


def canonical_json(obj) -> bytes:
    """Serialise JSON canonically (sorted keys, no spaces) so equal bodies hash equally."""
    # ASCII escapes keep lone surrogates and other odd text hashable.
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def body_hash(obj) -> str:
    """Return the SHA-256 (hex) of a mutation's canonical JSON."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def encode_cursor(state: dict, key: bytes) -> str:
    """Sign a cursor state: base64url(json) + "." + base64url(HMAC-SHA256)."""
    payload = base64.urlsafe_b64encode(canonical_json(state)).rstrip(b"=")
    signature = base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).rstrip(b"=")
    return (payload + b"." + signature).decode()


def decode_cursor(token: str, key: bytes) -> dict:
    """Verify and decode a cursor.

    :raises CursorInvalid: malformed or forged.
    """
    try:
        payload, signature = token.encode().split(b".")
        expected = base64.urlsafe_b64encode(hmac.new(key, payload, hashlib.sha256).digest()).rstrip(b"=")
        if not hmac.compare_digest(signature, expected):
            raise CursorInvalid("bad signature")
        return json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    except (ValueError, UnicodeError) as exc:
        raise CursorInvalid(str(exc)) from exc


def record_digest(pairs) -> str:
    """XOR of sha256(id ‖ ":" ‖ version) over (id, version) pairs: order-independent, hex."""
    acc = 0
    for record_id, version in pairs:
        acc ^= int.from_bytes(hashlib.sha256(f"{record_id}:{version}".encode()).digest(), "big")
    return f"{acc:064x}"


def scrub(obj):
    """Return a copy of a JSON value that PostgreSQL's jsonb accepts: no NUL, no lone surrogates, no NaN/Infinity.

    Quarantine keeps a phone's payload whole; what jsonb cannot store is replaced visibly, not dropped.
    """
    if isinstance(obj, str):
        return obj.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, list):
        return [scrub(item) for item in obj]
    if isinstance(obj, dict):
        return {scrub(str(key)): scrub(value) for key, value in obj.items()}
    return obj


def parse_uuid(value) -> uuid.UUID | None:
    """Return a UUID from its text form, or None when it is not one."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
