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
# A short continual pre-training run of the tiny model on the shards just rendered (DeepSpeed, CPU).
[[ -f out/tiny-model/config.json ]] || $PIPELINE make-tiny-model out/tiny-model
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}
# Its output sits beside the data it trains on: a run resumes only a run of the same data.
.venv/bin/python -m training.pretrain --config configs/train/pretrain.yaml --data "$OUT/rendered" \
    --output-dir "$OUT/pretrain" --max-steps 10
echo "pre-training metrics: $OUT/pretrain/metrics.jsonl; exported model: $OUT/pretrain/model"
