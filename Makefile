.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

# Shard the bundled sample corpus, render it with Dask, verify it; print where and the summary.
demo: setup
	bash scripts/demo.sh

test: setup
	.venv/bin/python -m pytest -n 2 -q

bench: setup
	.venv/bin/python benchmarks/render_speed.py
