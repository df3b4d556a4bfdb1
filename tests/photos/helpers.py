"""Helpers of the photo tests."""
from gridapp.extensions import db
from gridapp.jobs.worker import run_worker
from tests.factories import CELL, ORIGIN_A, token_for

WEST, NORTH = ORIGIN_A


def point_in(index: int) -> tuple[float, float]:
    col, row = index % 3, index // 3
    return WEST + CELL * (col + 0.5), NORTH - CELL * (row + 0.5)


def drain(app) -> None:
    """Run queued jobs (the derive job) with a real RQ worker, as deployed."""
    run_worker(app, ["default"], burst=True)
    db.session.expire_all()


def bearer(user) -> str:
    return token_for(user)["Authorization"].split(" ", 1)[1]


def report_with(phone, photos, index=0, description="暴露垃圾") -> str:
    """Save a report with photo files on the phone and push it (not the photos)."""
    lon, lat = point_in(index)
    incident_id = phone.report("06010", description, lon, lat, photos=photos)
    phone.push()
    return incident_id
