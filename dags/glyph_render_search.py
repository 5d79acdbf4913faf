"""glyph_render_search: the LLM-driven genetic search of the rendering configuration, on demand.

Triggered from the UI. `search` runs `pipeline search` (state saved after every evaluation, so
a retried task resumes without evaluating anything twice); `best` logs the winner's scores and
returns the URI of its best_config.json, which glyph_render's `render_config` takes as is.
With no VLM endpoint the evaluator is the offline OCR proxy. Wiring only; the work is in
pipeline.orchestration.orchestrate.
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task

from pipeline.orchestration import alerts
from pipeline.orchestration.task_policy import NETWORK, output_roots, output_uri_pattern, shipped


@dag(
    schedule=None,
    catchup=False,
    tags=["glyph"],
    on_failure_callback=alerts.run_failed,
    params={
        "validation_uri": Param(shipped("data/sample/search-validation.jsonl"), type="string",
                                description="Validation items (JSONL: context, question, answers), local or s3://"),
        "output_uri": Param(output_roots()[0] + "/search", type="string", pattern=output_uri_pattern(),
                            description="Search state, best_config.json, best.json and search.png go here"),
        "generations": Param(3, type="integer", minimum=1, description="Generations at most"),
        "population": Param(8, type="integer", minimum=2, description="Candidates per generation"),
        "max_evaluations": Param(None, type=["null", "integer"], minimum=1,
                                 description="Stop after this many evaluations (empty: no budget)"),
        "seed": Param(0, type="integer", description="Same seed, same search"),
        "min_ratio": Param(2.5, type="number", exclusiveMinimum=0,
                           description="Compression (text tokens per visual token) the fitness asks for"),
        "fitness": Param("constrained", enum=["constrained", "product"], description="See pipeline/search/fitness.py"),
        "vlm_endpoint": Param(None, type=["null", "string"],
                              description="Optional: OpenAI-compatible VLM endpoint; empty: GLYPH_VLM_ENDPOINT or "
                                          "offline OCR"),
        "vlm_model": Param(None, type=["null", "string"], description="Optional: model at the endpoint"),
        "critic_endpoint": Param(None, type=["null", "string"],
                                 description="Optional: LLM critic endpoint; empty: the VLM's"),
        "critic_model": Param(None, type=["null", "string"], description="Optional: critic model"),
    },
    default_args={"execution_timeout": timedelta(hours=24), **alerts.TASK_CALLBACKS},
)
def glyph_render_search():
    @task(**NETWORK)
    def search(params=None) -> str:
        from pipeline.orchestration import orchestrate

        return orchestrate.search_render_config(
            params["validation_uri"], params["output_uri"], params["generations"], params["population"],
            params["seed"], params["max_evaluations"], params["min_ratio"], params["fitness"],
            params["vlm_endpoint"] or None, params["vlm_model"] or None, params["critic_endpoint"] or None,
            params["critic_model"] or None)

    @task(**NETWORK)
    def best(search_uri: str) -> dict:
        from pipeline.orchestration import orchestrate

        result = orchestrate.best_render_config(search_uri)
        print(f"best render config: {result['config_uri']} (accuracy {result['accuracy']:.3f}, compression "
              f"{result['compression_ratio']:.2f}, fitness {result['fitness']:.3f}, evaluator {result['evaluator']})")
        return result

    best(search())


glyph_render_search()
