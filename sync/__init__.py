"""Offline sync between grid workers' phones and the server (docs/sync-protocol.md).

protocol.py is pure (wire constants, hashing, signed cursors, digests); push.py, pull.py, devices.py and
review.py use the models and services; client.py is the reference phone client (no Flask inside).
"""
