#!/usr/bin/env bash
# Run the whole system in the foreground: migrations, demo data, then web + RQ workers + scheduler.
# Ctrl-C (or SIGTERM) stops them all. Expects scripts/setup.sh to have run (make run does that).
set -euo pipefail
cd "$(dirname "$0")/.."
export FLASK_APP=wsgi.py
PORT="${PORT:-5000}"
FLASK=.venv/bin/flask

# A secret key that survives restarts (sessions and tokens stay valid), made once per checkout.
mkdir -p var
[ -s var/secret_key ] || .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))' > var/secret_key
export GRIDAPP_SECRET_KEY="${GRIDAPP_SECRET_KEY:-$(cat var/secret_key)}"

$FLASK db upgrade
$FLASK demo load

pids=()
# Ctrl-C reaches every process of the terminal's group, so on INT we only wait (a second signal would
# make the RQ worker abandon its job); on TERM or when one process died, we pass TERM on ourselves.
stop() {
  trap - INT TERM EXIT
  echo "[run] stopping"
  [ "$1" = INT ] || kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap 'stop INT' INT
trap 'stop TERM' TERM EXIT

# Workers, threads and timeouts: gunicorn.conf.py (read from this directory).
.venv/bin/gunicorn --bind "127.0.0.1:$PORT" --access-logfile - wsgi:app & pids+=($!)
# Several in-process RQ workers: a route job spends most of its time waiting on PostgreSQL and the squad's
# webhook, so one worker caps dispatch near 20 reports/s; three kept the queue short (bench/RESULTS.md "Dispatch").
for _ in $(seq "${RQ_WORKERS:-3}"); do
  $FLASK worker & pids+=($!)
done
$FLASK scheduler & pids+=($!)
echo "[run] gridapp on http://127.0.0.1:$PORT (health: /healthz, API: /api/v1/openapi.json). Ctrl-C stops."
# Exit (and stop the others) as soon as any of them dies.
wait -n "${pids[@]}"
