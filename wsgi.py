"""WSGI entry point: the only module that builds an app when imported."""
from gridapp import create_app

app = create_app()
