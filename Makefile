.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

# Render the bundled sample corpus with the paper's best config; print the summary.
demo: setup
	.venv/bin/pipeline render --shard data/sample/sample.jsonl --out out/demo

test: setup
	.venv/bin/python -m pytest -n 2 -q

bench: setup
	.venv/bin/python benchmarks/render_speed.py
