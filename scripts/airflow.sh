#!/usr/bin/env bash
# Airflow 3 on this machine with the repo's DAGs: `airflow standalone` (API server and UI,
# scheduler, DAG processor, triggerer) on a SQLite database under out/airflow-home.
# UI: http://127.0.0.1:${AIRFLOW_PORT:-8080} (local use: every visitor is an admin). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${AIRFLOW_PORT:-8080}
export AIRFLOW_HOME=${AIRFLOW_HOME:-$PWD/out/airflow-home}
export AIRFLOW__CORE__DAGS_FOLDER=$PWD/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$PORT
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$PORT/execution/
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}
# Where DAG runs write by default, and the only place a trigger form may send output (absolute paths).
export GLYPH_DATA_ROOT=${GLYPH_DATA_ROOT:-$PWD/out/airflow}
export GLYPH_OUTPUT_ROOTS=${GLYPH_OUTPUT_ROOTS:-$GLYPH_DATA_ROOT}
export PATH=$PWD/.venv/bin:$PATH   # standalone starts its components as `airflow ...`
mkdir -p "$AIRFLOW_HOME"
# Ctrl-C reaches the terminal's whole foreground group at once, and standalone's components, hit
# together, leave processes running. So standalone runs in a process group of its own (job control
# on), and Ctrl-C reaches this script only, which stops standalone as standalone expects: SIGINT to it
# alone; then whatever of its group is left, after 30 s, gets SIGTERM, then SIGKILL.
set -m
airflow standalone &
PID=$!
echo "started airflow standalone (process group $PID); Ctrl-C stops it"
stop() {
    trap - INT TERM
    echo "stopping airflow standalone..."
    kill -INT "$PID" 2>/dev/null || true
    for _ in $(seq 1 30); do
        pgrep -g "$PID" >/dev/null || break
        sleep 1
    done
    if pgrep -g "$PID" >/dev/null; then
        kill -TERM -- "-$PID" 2>/dev/null || true
        sleep 5
        kill -KILL -- "-$PID" 2>/dev/null || true
    fi
    echo "stopped"
    exit 0
}
trap stop INT TERM
wait "$PID"
