from flask import current_app, g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME, DeviceRevoked
from gridapp.extensions import db
from gridapp.models import Device
from gridapp.schemas.common import ProblemSchema
from gridapp.services.access import scope_prefix
from gridapp.services.scope import current_scope
from sync import devices
from sync.schemas import DeviceInfoSchema, DeviceStateSchema, DeviceTokensSchema, RefreshSchema, RegisterSchema

blp = Blueprint("devices", __name__, url_prefix="/api/v1/devices", description="Phones: registration and tokens")


def _tokens(device: Device, access: str, refresh: str) -> dict:
    epoch, cells = current_scope(device.user)
    return {"device_id": device.id, "access_token": access, "refresh_token": refresh,
            "access_expires_in": current_app.config["DEVICE_ACCESS_TTL_SECONDS"],
            "scope": {"epoch": epoch, "cells": sorted(cells)}}


def _ttls() -> tuple[int, int]:
    return current_app.config["DEVICE_ACCESS_TTL_SECONDS"], current_app.config["DEVICE_REFRESH_TTL_SECONDS"]


@blp.route("/register", methods=["POST"])
@blp.doc(security=[])
@blp.arguments(RegisterSchema)
@blp.response(201, DeviceTokensSchema)
@blp.alt_response(401, schema=ProblemSchema, content_type=PROBLEM_MIME, description="auth.invalid_credentials")
def register(body):
    """Register this app install for a grid worker; returns a 15-minute access token and a refresh token."""
    device, access, refresh = devices.register_device(
        body["username"], body["password"], body["install_id"], body["platform"], body["app_version"], *_ttls())
    db.session.commit()
    return _tokens(device, access, refresh)


@blp.route("/token", methods=["POST"])
@blp.doc(security=[])
@blp.arguments(RefreshSchema)
@blp.response(200, DeviceTokensSchema)
@blp.alt_response(403, schema=ProblemSchema, content_type=PROBLEM_MIME, description="sync.device_revoked")
def refresh(body):
    """Spend the refresh token for new tokens. A refresh token works once: reusing one revokes the device."""
    device, access, refresh_token = devices.rotate_refresh(body["refresh_token"], *_ttls())
    db.session.commit()
    if not access:
        raise DeviceRevoked("A spent refresh token was reused; the device is revoked.", wipe=True)
    return _tokens(device, access, refresh_token)


@blp.route("")
@require("device.read")
@blp.response(200, DeviceInfoSchema(many=True))
def list_devices():
    """List the devices of the users in the caller's area, with state, acknowledged position and clock offset."""
    return devices.devices_in_scope(scope_prefix(g.principal))


@blp.route("/<uuid:device_id>/state", methods=["POST"])
@require("device.manage")
@blp.arguments(DeviceStateSchema)
@blp.response(204)
def set_state(body, device_id):
    """Set a device to draining (push only, then wipe) or revoked (refused at once), with a reason."""
    device = devices.device_in_scope(device_id, scope_prefix(g.principal))
    devices.set_state(device, body["state"], g.user, body["reason"])
    db.session.commit()
