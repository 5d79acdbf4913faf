"""glyph_corpus_refresh: on a schedule, render what is new under the raw corpus prefix and publish it.

Rendering runs as one task that drives Dask (not one mapped task per shard): Dask already
schedules, retries and resumes shards, and thousands of mapped task instances would load
the Airflow scheduler and database for nothing. Wiring only; the work is in pipeline.orchestration.orchestrate.
"""

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from pipeline.orchestration import alerts
from pipeline.orchestration.task_policy import NETWORK, corpus_asset, data_root, shipped

RAW = os.environ.get("GLYPH_RAW_PREFIX") or shipped("data/sample")
ROOT = data_root()
DATASET = corpus_asset()


@dag(schedule=os.environ.get("GLYPH_REFRESH_CRON", "@daily"), start_date=datetime(2026, 1, 1), catchup=False,
     max_active_runs=1, tags=["glyph"], on_failure_callback=alerts.run_failed,
     default_args={"execution_timeout": timedelta(hours=12), **alerts.TASK_CALLBACKS})
def glyph_corpus_refresh():
    @task.short_circuit(**NETWORK)
    def find_new() -> dict | bool:
        from pipeline.orchestration import orchestrate

        found = orchestrate.find_new_objects(RAW, ROOT)
        return found if found["changed"] else False  # nothing new: the run ends here, nothing published

    @task(**NETWORK)
    def shard(found: dict, run_id=None) -> str:
        from pipeline import storage
        from pipeline.orchestration import orchestrate

        run_root = storage.join(ROOT, "runs", orchestrate.run_folder(run_id))
        return orchestrate.shard_corpus(found["changed"], storage.join(run_root, "input"))

    @task(**NETWORK)
    def render(shards_uri: str, run_id=None) -> dict:  # URI, pages, tokens, compression ratio
        from pipeline import storage
        from pipeline.orchestration import orchestrate

        styles = os.environ.get("GLYPH_STYLES", "document=0.4,web=0.2,code=0.2,dark=0.2")
        run_root = storage.join(ROOT, "runs", orchestrate.run_folder(run_id))
        return orchestrate.render_shards(shards_uri, storage.join(run_root, "rendered"), styles,
                                         scheduler=os.environ.get("GLYPH_DASK_SCHEDULER"))

    @task(**NETWORK)
    def verify(rendered: dict) -> dict:
        from pipeline.orchestration import orchestrate

        return orchestrate.verify_dataset(rendered)  # the render's summary and the counts checked

    @task(outlets=[DATASET], **NETWORK)
    def publish(verified: dict, found: dict, outlet_events=None) -> str:
        from pipeline.orchestration import orchestrate

        rendered_uri = verified["uri"]
        version_uri = orchestrate.publish_version(rendered_uri, ROOT, found["snapshot"])
        counts = {k: verified[k] for k in ("shards", "pages", "units", "text_tokens", "visual_tokens",
                                           "compression_ratio")}
        # glyph_train reads "dataset"; the counts say what was published
        outlet_events[DATASET].extra = {"dataset": rendered_uri, "version": version_uri, **counts}
        return version_uri

    found = find_new()
    publish(verify(render(shard(found))), found)


glyph_corpus_refresh()
