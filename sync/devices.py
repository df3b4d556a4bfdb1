"""Device lifecycle: registration per install, short access tokens, rotating refresh tokens with reuse
detection, and the states active → draining → revoked."""
import secrets
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from gridapp.errors import AuthRequired, DeviceRevoked, DeviceTokenRequired, Forbidden, NotFound, ValidationFailed
from gridapp.extensions import db
from gridapp.models import DEVICE_STATES, AdminArea, ApiToken, AuditEvent, Device, DeviceRefreshToken, User, utcnow
from gridapp.services.access import Principal
from gridapp.services.auth import check_credentials, digest, new_token

REFRESH_PREFIX = "grt_"


def register_device(username: str, password: str, install_id: str, platform: str, app_version: str,
                    access_ttl: int, refresh_ttl: int) -> tuple[Device, str, str]:
    """Register (or re-register) an install of a grid worker; return (device, access token, refresh token).

    The same install registering again gets the same device (its receipts and cursor stay valid); a
    reinstall has a new install_id and so a new device.

    :raises InvalidCredentials: wrong credentials.
    :raises Forbidden: the user is not a grid worker.
    :raises DeviceRevoked: this install was revoked.
    """
    user = check_credentials(username, password)
    if user.role != "grid_worker":
        raise Forbidden("Only grid workers register phones.")
    device = db.session.scalar(select(Device).where(Device.user_id == user.id, Device.install_id == install_id))
    if device is None:
        device = Device(id=uuid.uuid4(), user_id=user.id, install_id=install_id)
        db.session.add(device)
    elif device.state == "revoked":
        raise DeviceRevoked(wipe=True)
    device.platform, device.app_version, device.last_seen_at = platform, app_version, utcnow()
    db.session.flush()
    access, _ = new_token(user, access_ttl, device_id=device.id)
    refresh = _new_refresh(device, uuid.uuid4(), refresh_ttl)
    return device, access, refresh


def _new_refresh(device: Device, family_id: uuid.UUID, ttl: int) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    db.session.add(DeviceRefreshToken(device_id=device.id, token_hash=digest(token), family_id=family_id,
                                      expires_at=utcnow() + timedelta(seconds=ttl)))
    db.session.flush()
    return token


def rotate_refresh(refresh_token: str, access_ttl: int, refresh_ttl: int) -> tuple[Device, str, str]:
    """Spend a refresh token for a new access and refresh token.

    Presenting a refresh token that was already spent means it was copied: the device is revoked.

    :raises AuthRequired: unknown or expired refresh token, or disabled user.
    :raises DeviceRevoked: the device is revoked (now or before).
    """
    row = db.session.scalar(select(DeviceRefreshToken).where(DeviceRefreshToken.token_hash == digest(refresh_token))
                            .with_for_update())
    if row is None:
        raise AuthRequired("Unknown refresh token.")
    device = db.session.get(Device, row.device_id)
    if device.state == "revoked":  # revoking spent every token: that is no reuse to record again
        raise DeviceRevoked(wipe=True)
    if row.used_at is not None:
        set_state(device, "revoked", actor=None, reason="refresh token reused")
        return device, "", ""  # the caller commits the revocation, then refuses
    if row.expires_at <= utcnow() or not device.user.is_active:
        raise AuthRequired("The refresh token has expired; sign in again (the outbox is kept).")
    row.used_at = utcnow()
    access, _ = new_token(device.user, access_ttl, device_id=device.id)
    return device, access, _new_refresh(device, row.family_id, refresh_ttl)


def set_state(device: Device, state: str, actor: User | None, reason: str | None) -> None:
    """Move a device to active, draining or revoked; revoking kills its tokens at once. Audited."""
    if state not in DEVICE_STATES:
        raise ValidationFailed(fields={"state": [f"One of {', '.join(DEVICE_STATES)}."]})
    previous = device.state
    device.state, device.state_reason = state, reason
    if state == "revoked":
        now = utcnow()
        db.session.execute(update(ApiToken).where(ApiToken.device_id == device.id, ApiToken.revoked_at.is_(None))
                           .values(revoked_at=now))
        db.session.execute(update(DeviceRefreshToken).where(DeviceRefreshToken.device_id == device.id,
                                                            DeviceRefreshToken.used_at.is_(None)).values(used_at=now))
    db.session.add(AuditEvent(actor_id=actor.id if actor else None, action="device.set_state", object_type="device",
                              object_id=str(device.id), reason=reason, details={"from": previous, "to": state}))
    db.session.flush()


# A phone pushing every few seconds would otherwise write its devices row on every request: its clock is
# recorded again only when the last record is this old, or the offset moved by more than this.
CLOCK_RECORD_INTERVAL = timedelta(minutes=1)
CLOCK_RECORD_DRIFT_MS = 1000


def token_device(principal: Principal) -> uuid.UUID:
    """Return the id of the device the request's access token (its principal) belongs to.

    :raises DeviceTokenRequired: not a device token. :raises DeviceRevoked: the device is revoked.
    """
    check_device(principal.device_id, principal.device_state)
    return principal.device_id


def record_clock(principal: Principal, offset_ms: int) -> bool:
    """Record a phone's clock offset and the time it was seen (flushed, not committed), unless the record
    its principal read is recent and close to this offset (see CLOCK_RECORD_INTERVAL); return whether it wrote."""
    now = utcnow()
    if (principal.device_seen_at is not None and principal.device_seen_at > now - CLOCK_RECORD_INTERVAL
            and principal.device_clock_offset_ms is not None
            and abs(principal.device_clock_offset_ms - offset_ms) <= CLOCK_RECORD_DRIFT_MS):
        return False
    db.session.execute(update(Device.__table__).where(Device.__table__.c.id == principal.device_id)
                       .values(clock_offset_ms=offset_ms, last_seen_at=now))
    return True


def check_device(device_id, state: str | None) -> None:
    """Refuse a token without a device, or of a revoked device.

    :raises DeviceTokenRequired: not a device token. :raises DeviceRevoked: the device is revoked.
    """
    if device_id is None:
        raise DeviceTokenRequired()
    if state == "revoked":
        raise DeviceRevoked(wipe=True)


def devices_in_scope(prefix: str) -> list[Device]:
    """List the devices of users whose area lies inside a scope."""
    return list(db.session.scalars(
        select(Device).join(Device.user).join(User.area).where(AdminArea.code.startswith(prefix))
        .order_by(Device.created_at)))


def device_in_scope(device_id, prefix: str) -> Device:
    """Return a device of a user inside a scope.

    :raises NotFound: no such device in scope.
    """
    device = db.session.get(Device, device_id)
    if device is None or not device.user.area.code.startswith(prefix):
        raise NotFound(device_id=str(device_id))
    return device
