.PHONY: setup demo test bench airflow

setup:
	bash scripts/setup.sh

# Shard the bundled sample corpus, render it with Dask, verify it; print where and the summary.
demo: setup
	bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest -n 2 -q

bench: setup
	.venv/bin/python benchmarks/render_speed.py

# Airflow with the repo's DAGs on http://127.0.0.1:8080 (Ctrl-C stops it).
airflow: setup
	bash scripts/airflow.sh
