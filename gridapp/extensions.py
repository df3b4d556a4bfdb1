"""Unbound extensions, bound to the app in create_app (init_app pattern)."""
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from redis import Redis

from gridapp.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()


class RedisHolder:
    """The app's Redis connection, created from REDIS_URL at init_app time (never at import)."""

    def __init__(self):
        self.connection: Redis | None = None

    def init_app(self, app):
        self.connection = Redis.from_url(app.config["REDIS_URL"], socket_timeout=5, socket_connect_timeout=2)
        app.extensions["redis"] = self.connection


redis_store = RedisHolder()
