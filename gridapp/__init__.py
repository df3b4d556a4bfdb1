"""gridapp: grid management for townships. create_app() is the only way to build the app."""
import logging
from collections.abc import Mapping
from pathlib import Path

from flask import Flask

from gridapp.config import Defaults

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")
REQUIRED_KEYS = ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "REDIS_URL")


def create_app(config: Mapping | None = None) -> Flask:
    """Build the app: config → extensions → error handlers → blueprints → CLI."""
    app = Flask(__name__)
    # Chinese names as UTF-8, keys in the order the schemas give them.
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.config.from_object(Defaults)
    app.config.from_prefixed_env("GRIDAPP")
    if config:
        app.config.from_mapping(config)
    missing = [key for key in REQUIRED_KEYS if not app.config.get(key)]
    if missing:
        raise RuntimeError(f"gridapp: missing configuration {', '.join(missing)} (set GRIDAPP_<KEY> env vars)")
    logging.basicConfig(level=app.config.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    from gridapp import cli, errors, storage, transactions
    from gridapp.api import GridApi, register_api
    from gridapp.extensions import db, migrate, redis_store
    from gridapp.services.passwords import init_app as init_passwords
    from gridapp.services.photos import init_app as init_photos

    db.init_app(app)
    transactions.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR)
    redis_store.init_app(app)
    init_passwords(app)
    storage.init_app(app)
    init_photos(app)
    api = GridApi(app)
    # Registered after flask-smorest's own handler so the one problem+json handler wins.
    errors.register_error_handlers(app)
    register_api(app, api)
    cli.init_app(app)
    from gridapp.dashboard import init_app as init_dashboard

    init_dashboard(app)
    if app.config["SERVER_TIMING"]:
        from gridapp.server_timing import ServerTiming

        app.wsgi_app = ServerTiming(app.wsgi_app)
    return app
