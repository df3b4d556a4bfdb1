# The two commands of the README: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV := .venv
FLASK := $(VENV)/bin/flask
PORT ?= 5000
DB_URL = postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/$(1)

export FLASK_APP := wsgi.py

.PHONY: run test setup setup-test bench

## Set up everything, load the demo data and run web + RQ worker + scheduler (Ctrl-C stops all).
run: setup
	GRIDAPP_SQLALCHEMY_DATABASE_URI='$(call DB_URL,gridapp)' PORT=$(PORT) scripts/run.sh

## Set up a separate test database and run the whole suite.
test: setup-test
	GRIDAPP_SQLALCHEMY_DATABASE_URI='$(call DB_URL,gridapp_test)' GRIDAPP_REDIS_URL='redis://127.0.0.1:6379/15' \
	  $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup:
	scripts/setup.sh gridapp

# The *_bench* databases are for the benchmarks' smoke runs inside the suite.
setup-test:
	scripts/setup.sh gridapp_test gridapp_bench gridapp_bench_sync gridapp_bench_dispatch gridapp_bench_photos \
	  gridapp_bench_tiles gridapp_bench_export

## Run the benchmarks (big data; not part of `make test`).
bench:
	scripts/setup.sh gridapp_bench gridapp_bench_sync gridapp_bench_dispatch gridapp_bench_photos gridapp_bench_tiles \
	  gridapp_bench_export
	for b in grid_queries sync_push sync_pull sync_outage dispatch_latency escalation_sweep photo_upload map_tiles \
	         export; do \
	  $(VENV)/bin/python -m bench.$$b || exit 1; done
