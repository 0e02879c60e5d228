#!/usr/bin/env bash
# Set up everything and run the whole test suite on a fresh machine:
#   bash scripts/test.sh
# Creates .venv (or $VENV), installs the project with its dev extra, makes sure
# RabbitMQ, Redis and PostgreSQL answer on 127.0.0.1 (starting them if they do
# not) and that the test database exists, then runs ruff, mypy --strict and
# pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"

port_open() {
    "$VENV/bin/python" - "$1" <<'PY'
import socket, sys
with socket.socket() as s:
    s.settimeout(1)
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
PY
}

wait_for_port() {
    local name=$1 port=$2
    for _ in $(seq 1 90); do
        port_open "$port" && return 0
        sleep 1
    done
    echo "error: $name is not answering on 127.0.0.1:$port after 90s" >&2
    return 1
}

if ! port_open 6379; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
if ! port_open 5672; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
fi
if ! port_open 5432; then
    echo "starting PostgreSQL"
    service postgresql start || pg_ctlcluster --skip-systemctl-redirect 15 main start || true
fi
wait_for_port Redis 6379
wait_for_port RabbitMQ 5672
wait_for_port PostgreSQL 5432
# The crons-on-PostgreSQL tests need their database ($POSTGRES_URL).
"$VENV/bin/python" scripts/postgres_db.py

"$VENV/bin/ruff" check jobify_celery benchmarks tests examples scripts
"$VENV/bin/python" -m mypy

set +e
"$VENV/bin/python" -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
