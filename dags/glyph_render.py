"""glyph_render: render a corpus on demand, from the Airflow UI's trigger form.

Wiring only: each task calls one function of pipeline.orchestration.orchestrate and passes URIs.
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task

from pipeline.orchestration import alerts
from pipeline.orchestration.task_policy import (NETWORK, dask_scheduler_pattern, dask_schedulers, output_roots,
                                  output_uri_pattern, shipped, style_mixture_pattern, style_names)


@dag(
    schedule=None,
    catchup=False,
    tags=["glyph"],
    params={
        "corpus_uri": Param(shipped("data/sample/sample.jsonl"), type="string",
                            description="Raw corpus: a JSONL/Parquet file or folder, local or s3://bucket/prefix"),
        "output_uri": Param(output_roots()[0] + "/render", type="string", pattern=output_uri_pattern(),
                            description="Where input shards (input/) and rendered shards (rendered/) go: under "
                                        f"{', '.join(output_roots())} (GLYPH_OUTPUT_ROOTS)"),
        "overwrite": Param(False, type="boolean",
                           description="Replace what an earlier run with other settings left at output_uri "
                                       "(otherwise such a run is refused; one with the same settings resumes)"),
        "styles": Param("document=0.4,web=0.2,code=0.2,dark=0.2", type="string", pattern=style_mixture_pattern(),
                        description=f"Style mixture NAME=WEIGHT,... ({', '.join(style_names())}); "
                                    "a bare NAME weighs 1"),
        "render_config": Param(None, type=["null", "string"],
                               description="Optional: a style name or Glyph JSON config path for every page"),
        "num_shards": Param(2, type="integer", minimum=1, maximum=100000, description="Input shards (Dask tasks)"),
        "backend": Param("skia", enum=["skia", "pdf"], description="skia: fast; pdf: reportlab + poppler"),
        "dask_scheduler": Param(None, type=["null", "string"], pattern=dask_scheduler_pattern(),
                                description="Optional: a Dask scheduler of GLYPH_DASK_SCHEDULERS ("
                                            f"{', '.join(dask_schedulers()) or 'none configured'}); "
                                            "empty: a LocalCluster"),
    },
    on_failure_callback=alerts.run_failed,
    default_args={"execution_timeout": timedelta(hours=12), **alerts.TASK_CALLBACKS},
)
def glyph_render():
    @task(**NETWORK)
    def shard(params=None) -> str:
        from pipeline import storage
        from pipeline.orchestration import orchestrate

        return orchestrate.shard_corpus([params["corpus_uri"]], storage.join(params["output_uri"], "input"),
                                        num_shards=params["num_shards"], overwrite=params["overwrite"])

    @task(**NETWORK)
    def render(shards_uri: str, params=None) -> dict:  # URI, pages, tokens, compression ratio
        from pipeline import storage
        from pipeline.orchestration import orchestrate

        return orchestrate.render_shards(shards_uri, storage.join(params["output_uri"], "rendered"),
                                         params["styles"], params["backend"], params["dask_scheduler"] or None,
                                         render_config=params["render_config"] or None,
                                         overwrite=params["overwrite"])

    @task(**NETWORK)
    def verify(rendered: dict) -> dict:
        from pipeline.orchestration import orchestrate

        return orchestrate.verify_dataset(rendered)  # the render's summary and the counts checked

    verify(render(shard()))


glyph_render()
