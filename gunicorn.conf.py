"""gunicorn's settings for gridapp. gunicorn reads this file from the working directory by itself, so
scripts/run.sh and the benchmarks run the same server; a command-line option overrides a setting here."""

# gthread: keep-alive connections (a phone on a weak link reuses one) and a thread per request in flight.
worker_class = "gthread"
# Processes rather than threads: a worker runs Python one thread at a time (the GIL), so on 2 cores
# 2 workers × 4 threads queued requests behind each other's Python; 4 × 2 pushed 20–31 % more reports per
# second with the same CPU per report (bench/RESULTS.md, "Push throughput").
workers = 4
threads = 2
# A short graceful timeout: a gthread worker otherwise waits up to 30 s on idle browser connections.
graceful_timeout = 10
