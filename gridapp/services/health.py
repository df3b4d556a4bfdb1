"""Readiness of the parts the system needs: database with PostGIS, Redis, live RQ workers."""
from redis.exceptions import RedisError
from rq import Worker
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gridapp.extensions import db, redis_store


def check_health() -> tuple[bool, dict]:
    """Probe each dependency; return (all up, per-component state). Never raises."""
    components = {}
    try:
        version = db.session.execute(text("SELECT postgis_lib_version()")).scalar()
        components["database"] = {"status": "up"}
        components["postgis"] = {"status": "up", "version": version}
    except SQLAlchemyError as exc:
        db.session.rollback()
        reason = str(exc.orig if hasattr(exc, "orig") else exc).splitlines()[0][:200]
        components["database"] = {"status": "down", "error": reason}
        components["postgis"] = {"status": "unknown"}
    try:
        redis_store.connection.ping()
        components["redis"] = {"status": "up"}
        workers = Worker.all(connection=redis_store.connection)
        components["rq_workers"] = {
            "status": "up" if workers else "down",
            "count": len(workers),
            "names": sorted(w.name for w in workers),
        }
    except RedisError as exc:
        components["redis"] = {"status": "down", "error": str(exc)[:200]}
        components["rq_workers"] = {"status": "unknown", "count": 0}
    ok = all(c["status"] == "up" for c in components.values())
    return ok, components
