from flask_migrate import check, downgrade, upgrade
from sqlalchemy import inspect, text

from gridapp.extensions import db


def test_models_and_migrations_agree(app):
    """`alembic check`: autogenerate against the migrated database finds nothing to do."""
    check()  # exits non-zero (failing the test) when models and migrations differ


def test_downgrade_to_base_and_back(app):
    downgrade(revision="base")
    db.session.remove()
    assert set(inspect(db.engine).get_table_names()) <= {"spatial_ref_sys", "alembic_version"}
    # PostGIS survives a downgrade: dropping it needs a superuser and other objects may use it.
    assert db.session.execute(text("SELECT postgis_lib_version()")).scalar()
    upgrade()
    db.session.remove()
    assert "grid_cells" in inspect(db.engine).get_table_names()
    indexes = {i["name"] for i in inspect(db.engine).get_indexes("grid_cells")}
    assert {"idx_grid_cells_geom", "uq_grid_cells_current_code", "ix_grid_cells_code_prefix"} <= indexes
