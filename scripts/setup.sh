#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root): system packages, services,
# the Python venv, and each named database with PostGIS. Usage: scripts/setup.sh DBNAME [DBNAME...]
set -euo pipefail
cd "$(dirname "$0")/.."

DB_NAMES=("${@:-gridapp}")
DB_USER="${GRIDAPP_DB_USER:-gridapp}"
DB_PASSWORD="${GRIDAPP_DB_PASSWORD:-gridapp}"
PG_VERSION=15
VENV=.venv

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- system packages (only what is missing; apt-get update once, only if something is missing)
packages=(postgresql-$PG_VERSION postgresql-$PG_VERSION-postgis-3 postgresql-$PG_VERSION-postgis-3-scripts
          redis-server gcc gdal-bin
          poppler-utils fonts-wqy-microhei time)  # exports: pdffonts/pdftoppm, the maps' CJK font, bench peak RSS
# Python 3.11 with venv may come from elsewhere (pyenv); only ask Debian for it when it is missing.
python3.11 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3.11 python3.11-venv python3.11-dev)
# Dashboard: npm for its browser libraries (Leaflet; served by the app, no CDN), Chromium for its
# end-to-end tests (driven by Playwright with executable_path; Playwright never downloads a browser).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
packages+=(chromium)  # fonts-wqy-microhei (above) also makes the screenshots read as Chinese
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- services (no systemd here: start them directly when they are not answering)
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  say "starting PostgreSQL $PG_VERSION"
  pg_lsclusters -h | grep -q "^$PG_VERSION main" || pg_createcluster $PG_VERSION main >/dev/null
  pg_ctlcluster --skip-systemctl-redirect $PG_VERSION main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/redis \
    --logfile /var/log/redis/gridapp.log --appendonly yes --maxmemory-policy noeviction
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

# --- Python venv with the pinned requirements (re-installed only when requirements.txt changes)
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; python3.11 -m venv "$VENV"; }
if ! cmp -s requirements.txt "$VENV/.requirements.installed"; then
  say "installing Python requirements"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$VENV/.requirements.installed"
fi

# --- the dashboard's browser libraries, exactly as package-lock.json pins them (re-installed when it changes)
if ! cmp -s package-lock.json node_modules/.gridapp-lock.installed; then
  say "installing the dashboard's npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.gridapp-lock.installed
fi

# --- database role, database and PostGIS. The role is not a superuser, so the extension is
# created here by the postgres superuser; the first migration's CREATE EXTENSION is then a no-op.
psql_admin() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]; then
  say "creating role $DB_USER"
  psql_admin -c "CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASSWORD'"
fi
# The benchmarks write a bulk load's dirty pages out (CHECKPOINT) before timing, so the checkpointer
# does not write them during the timed requests.
psql_admin -c "SET client_min_messages = warning; GRANT pg_checkpoint TO $DB_USER"
for DB_NAME in "${DB_NAMES[@]}"; do
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    say "creating database $DB_NAME"
    psql_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
  fi
  psql_admin -d "$DB_NAME" -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS postgis"
  version=$(psql_admin -d "$DB_NAME" -c 'SELECT postgis_lib_version()')
  say "database $DB_NAME ready (PostGIS $version)"
done
