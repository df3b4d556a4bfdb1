"""Benchmarks (big data, not part of the test suite): run them as modules, e.g. `python -m bench.grid_queries`."""
