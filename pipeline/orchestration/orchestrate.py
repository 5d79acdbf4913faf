"""What the Airflow DAGs call: one function per task, URIs in and out, nothing heavy at import.

Kept apart from the DAG files so they stay wiring only, and testable without Airflow.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

from pipeline import storage

STATE = "refresh_state.json"


@contextlib.contextmanager
def no_retry_for_configuration_errors():
    """A job that exited 2 (a configuration error) fails its Airflow task for good instead of being retried."""
    from pipeline.orchestration.launchers import ConfigurationFailed

    try:
        yield
    except ConfigurationFailed as err:
        if "airflow.sdk" not in sys.modules:  # not in an Airflow task (importing Airflow here would configure it)
            raise err from None
        from airflow.sdk.exceptions import AirflowFailException

        class NotRetried(ConfigurationFailed, AirflowFailException):
            """Still a JobFailed for callers outside Airflow; Airflow fails the task without retrying."""

        raise NotRetried(str(err)) from None


def run_folder(run_id: str) -> str:
    """An Airflow run id as one safe path segment (the same for every try of the run)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)


def datasets_from_events(events, default: str) -> str:
    """The datasets named by the glyph_corpus Asset events that started a run, oldest first and
    comma-joined (events that queued while a long run went on are all trained on); else default."""
    ordered = sorted(events or [], key=lambda event: event.timestamp)
    named = [(event.extra or {}).get("dataset") for event in ordered]
    named = list(dict.fromkeys(uri for uri in named if uri))
    return ",".join(named) if named else default


def find_new_objects(raw_prefix: str, state_root: str) -> dict:
    """Raw corpus objects that are new or changed (size or S3 ETag / local mtime) since the last publish."""
    store = storage.get_storage(state_root)
    state_uri = storage.join(state_root, STATE)
    seen = json.loads(store.read_text(state_uri))["objects"] if store.exists(state_uri) else {}
    current = {o.uri: [o.size, o.version] for o in storage.list_uris(raw_prefix)}
    changed = sorted(uri for uri, now in current.items() if not _same(seen.get(uri), now))
    return {"changed": changed, "snapshot": current}


def _same(seen, now: list) -> bool:
    if isinstance(seen, int):  # state written before versions were recorded: size only
        return seen == now[0]
    return seen == now


def shard_corpus(inputs: list[str], out_uri: str, num_shards: int | None = None, max_chars: int = 200_000,
                 dataset: str = "corpus", overwrite: bool = False) -> str:
    """Shard in this process; returns the absolute URI (the next task may run in another working directory)."""
    from pipeline.corpus.sharder import CorpusSharder, ShardSettings

    out_uri = storage.absolute(out_uri)
    CorpusSharder(ShardSettings(num_shards=num_shards, max_chars=max_chars, dataset=dataset)).run(
        inputs, out_uri, overwrite=overwrite)
    return out_uri


def render_shards(shards_uri: str, out_uri: str, styles: str, backend: str = "skia", scheduler: str | None = None,
                  workers: int | None = None, render_config: str | None = None, seed: int = 0,
                  overwrite: bool = False, log=print) -> dict:
    """All shards in one task that drives Dask (see the refresh DAG's docstring for why not one task per shard).

    Runs `pipeline render-corpus` in its own interpreter, its log streamed to `log`: a LocalCluster's
    worker processes re-import their parent's main module, which inside an Airflow task is the
    `airflow` script itself, and that refuses to start without database access.
    """
    from pipeline.orchestration.launchers import run_streamed

    shards_uri, out_uri = storage.absolute(shards_uri), storage.absolute(out_uri)
    command = [sys.executable, "-m", "pipeline.cli", "render-corpus", shards_uri, "--out", out_uri,
               "--styles", styles, "--backend", backend, "--seed", str(seed)]
    if overwrite:
        command.append("--overwrite")
    for flag, value in (("--scheduler", scheduler), ("--workers", workers), ("--config", render_config)):
        if value:
            command += [flag, str(value)]
    with no_retry_for_configuration_errors():
        run_streamed(command, log)
    return render_summary(out_uri)


def render_summary(uri: str) -> dict:
    """What a finished render made, from its manifest: the URI, pages, units, tokens and compression."""
    from pipeline.corpus.verify import MANIFEST

    manifest = json.loads(storage.get_storage(uri).read_text(storage.join(uri, MANIFEST)))
    keys = ("units", "pages", "text_tokens", "visual_tokens", "compression_ratio", "skipped_count", "styles")
    return {"uri": uri, **{k: manifest[k] for k in keys}}


def verify_dataset(rendered: str | dict, log=print) -> dict:
    """Check the dataset (a URI, or a render's summary); fail with its problems, or log and return what was
    checked: the render's summary, or the URI, with the counts."""
    from pipeline.corpus.verify import MANIFEST, verify_dataset as verify

    summary = rendered if isinstance(rendered, dict) else {"uri": rendered}
    uri = summary["uri"]
    problems = verify(uri)
    if problems:
        raise RuntimeError(f"{uri} does not verify ({len(problems)} problems):\n" + "\n".join(problems[:20]))
    manifest = json.loads(storage.get_storage(uri).read_text(storage.join(uri, MANIFEST)))
    counts = {"shards": len(manifest["shards"]), "samples": manifest["samples"], "units": manifest["units"],
              "skipped": manifest["skipped_count"], "input_units": manifest["input_units"]}
    log(f"verified {uri}: {counts['shards']} shards (markers, checksums), {counts['samples']} pages decoded, "
        f"{counts['units']} units joined back to their text, {counts['skipped']} skipped of "
        f"{counts['input_units']} input units, nothing stray")
    return {**summary, **counts}


def publish_version(dataset_uri: str, state_root: str, snapshot: dict) -> str:
    """A new versioned dataset manifest for what this run rendered, then the refresh state.

    A version holds the objects that were new or changed since the one before, which it names
    (`previous`): continual pre-training reads each delta as it arrives, and walking `previous`
    back gives everything. latest.json and the refresh state are written last, so a publish that
    dies part-way leaves the previous version current and the next run redoes this one.
    """
    store = storage.get_storage(state_root)
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    latest_uri, state_uri = storage.join(state_root, "versions", "latest.json"), storage.join(state_root, STATE)
    # The previous version is the one the refresh state records: a publish that died after
    # latest.json but before the state must not become its own retry's predecessor.
    last = json.loads(store.read_text(state_uri)).get("version") if store.exists(state_uri) else None
    previous = storage.join(state_root, "versions", last, "dataset.json") if last else None
    manifest = json.loads(storage.get_storage(dataset_uri).read_text(storage.join(dataset_uri, "manifest.json")))
    uri = storage.join(state_root, "versions", version, "dataset.json")
    record = {"version": version, "uri": uri, "previous": previous, "dataset": dataset_uri,
              "pages": manifest["pages"], "units": manifest["units"],
              "shards": [storage.join(dataset_uri, s["shard"]) for s in manifest["shards"]]}
    store.write_text(uri, json.dumps(record, indent=2) + "\n")
    store.write_text(latest_uri, json.dumps(record, indent=2) + "\n")
    store.write_text(state_uri, json.dumps({"version": version, "objects": snapshot}) + "\n")
    return uri


def search_render_config(validation: str, out_uri: str, generations: int, population: int, seed: int = 0,
                         max_evaluations: int | None = None, min_ratio: float = 2.5, fitness: str = "constrained",
                         endpoint: str | None = None, model: str | None = None, critic_endpoint: str | None = None,
                         critic_model: str | None = None, log=print) -> str:
    """`pipeline search` in its own process, log streamed. A re-run resumes from the state saved at out_uri."""
    from pipeline.orchestration.launchers import run_streamed

    command = [sys.executable, "-m", "pipeline.cli", "search", "--validation", validation, "--out", out_uri,
               "--generations", str(generations), "--population", str(population), "--seed", str(seed),
               "--min-ratio", str(min_ratio), "--fitness", fitness]
    for flag, value in (("--max-evaluations", max_evaluations), ("--endpoint", endpoint), ("--model", model),
                        ("--critic-endpoint", critic_endpoint), ("--critic-model", critic_model)):
        if value:
            command += [flag, str(value)]
    with no_retry_for_configuration_errors():
        run_streamed(command, log)
    return out_uri


def best_render_config(search_uri: str) -> dict:
    """The search's result: its scores and the URI of best_config.json (a render_config for glyph_render)."""
    best = json.loads(storage.get_storage(search_uri).read_text(storage.join(search_uri, "best.json")))
    summary = {k: best["best"][k] for k in ("accuracy", "compression_ratio", "fitness")}
    return {**summary, "evaluator": best["evaluator"], "config_uri": storage.join(search_uri, "best_config.json")}


def train_stage(stage: str, config: str, model: str, data: str, output_dir: str, max_steps: int | None = None,
                launcher: str = "local", run_key: str | None = None, log=print) -> str:
    """Run one training stage to completion; return the exported model's URI for the next stage.

    `run_key` (the Airflow run id) names cluster jobs, so a retried task re-attaches to its stage's job.
    """
    from pipeline.orchestration.launchers import get_launcher

    overrides = {"model": model, "data": data, "output_dir": output_dir, "max_steps": max_steps}
    with no_retry_for_configuration_errors():
        get_launcher(launcher, log=log, run_key=run_key and f"{run_key}/{stage}").run(stage, config, overrides)
    return storage.join(output_dir, "model")
