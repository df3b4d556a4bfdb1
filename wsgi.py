"""WSGI entry point: the only module that builds an app when imported."""
import gc

from gridapp import create_app

app = create_app()
# The app's objects (modules, routes, schemas, mappers) live as long as the worker: move them out of the
# collector's reach, or every full collection walks all ~190,000 of them again (~0.1 s holding the GIL,
# a few times in the push benchmark's run; ~15 ms once frozen).
gc.freeze()
