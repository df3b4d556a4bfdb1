"""WSGI entry point: the only module that builds an app when imported."""
import gc

from gridapp import create_app

app = create_app()
# The app's objects (modules, routes, schemas, mappers) live as long as the worker: move them out of the
# collector's reach, or every full collection walks them all again (~0.1 ms a pushed report).
gc.freeze()
