"""Unbound extensions, bound to the app in create_app (init_app pattern)."""
from flask import current_app
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from redis import Redis

from gridapp.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()


class RedisHolder:
    """The current app's Redis connection, made from REDIS_URL at init_app time (never at import)."""

    def init_app(self, app):
        app.extensions["redis"] = Redis.from_url(app.config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=2)

    @property
    def connection(self) -> Redis:
        return current_app.extensions["redis"]


redis_store = RedisHolder()
