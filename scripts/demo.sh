#!/usr/bin/env bash
# The main job on embedded defaults: shard the bundled sample corpus, render it
# with Dask on this machine, verify it. OUT may be a folder or s3://bucket/prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
PIPELINE=.venv/bin/pipeline
$PIPELINE shard data/sample/sample.jsonl --out "$OUT/input" --num-shards 2 --max-chars 20000 --dataset sample
$PIPELINE render-corpus "$OUT/input" --out "$OUT/rendered" ${SCHEDULER:+--scheduler "$SCHEDULER"}
$PIPELINE verify "$OUT/rendered"
$PIPELINE inspect "$OUT/rendered" --sheet "${SHEET:-out/demo-inspect.png}" > /dev/null
echo "rendered shards: $OUT/rendered (manifest.json); contact sheet: ${SHEET:-out/demo-inspect.png}"
