"""Alembic environment for Flask-Migrate, wired to GeoAlchemy2's helpers.

The helpers make autogenerate emit create_geospatial_table/add_geospatial_column with the right
imports, avoid the duplicate GiST index trap, and skip PostGIS's own tables (spatial_ref_sys).
"""
import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app
from geoalchemy2 import alembic_helpers

config = context.config
if config.config_file_name and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db
config.set_main_option(
    "sqlalchemy.url", target_db.engine.url.render_as_string(hide_password=False).replace("%", "%%")
)

# PostGIS's own schema objects (tiger/topology tables if those extensions exist) are not ours.
POSTGIS_TABLES = {"spatial_ref_sys", "layer", "topology"}


def include_object(obj, name, type_, reflected, compare_to):
    """Skip PostGIS-owned tables, then defer to GeoAlchemy2's rules."""
    if type_ == "table" and reflected and compare_to is None and name in POSTGIS_TABLES:
        return False
    return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)


CONFIGURE_ARGS = {
    "include_object": include_object,
    "process_revision_directives": alembic_helpers.writer,
    "render_item": alembic_helpers.render_item,
    "compare_type": True,
}


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_db.metadata,
                      literal_binds=True, **CONFIGURE_ARGS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    with target_db.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_db.metadata, **CONFIGURE_ARGS)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
