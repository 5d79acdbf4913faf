"""glyph_train: pre-training, then SFT, then RL, each stage's exported model feeding the next.

Scheduled on the glyph_corpus Asset and triggerable by hand. A run started by the Asset
pre-trains on the dataset versions its events name (all that queued since the last run); the
other settings of such runs are the Params' defaults, which deployments set with GLYPH_TRAIN_*
variables: each run starts from GLYPH_TRAIN_MODEL. A stage is a job
started by a launcher (local subprocess by default, Kubernetes, Slurm); its log streams into
the task log, a failed job fails the task with the job's error, and a retried task re-attaches
to its job or resumes from the stage's checkpoint. Each run writes OUTPUT/<run id>/<stage>.
Wiring only; the work is in pipeline.orchestration.orchestrate.
"""

import os
from datetime import timedelta

from airflow.sdk import Param, dag, task

from pipeline.orchestration import alerts
from pipeline.orchestration.task_policy import corpus_asset, output_roots, output_uri_pattern

DATASET = corpus_asset()
STAGE = dict(retries=2, retry_delay=timedelta(seconds=int(os.environ.get("GLYPH_STAGE_RETRY_DELAY_S", "60"))),
             retry_exponential_backoff=True, execution_timeout=timedelta(days=3), **alerts.TASK_CALLBACKS)
MAX_STEPS = os.environ.get("GLYPH_TRAIN_MAX_STEPS", "2")


@dag(
    schedule=[DATASET],
    catchup=False,
    max_active_runs=1,
    tags=["glyph"],
    on_failure_callback=alerts.run_failed,
    params={
        "model": Param(os.environ.get("GLYPH_TRAIN_MODEL", "out/tiny-model"), type="string",
                       description="Starting model: folder, hub id or s3://"),
        "data": Param(os.environ.get("GLYPH_TRAIN_DATA", "out/demo/rendered"), type="string",
                      description="Rendered shards for pre-training (a run started by the Asset uses its dataset)"),
        "sft_data": Param(os.environ.get("GLYPH_TRAIN_SFT_DATA", "data/sample/sft.jsonl"), type="string",
                          description="Chat JSONL for SFT and RL"),
        "output_uri": Param(os.environ.get("GLYPH_TRAIN_OUTPUT_URI") or output_roots()[0] + "/train", type="string",
                            pattern=output_uri_pattern(),
                            description="Each run writes OUTPUT/<run id>/<stage>; under "
                                        f"{', '.join(output_roots())} (GLYPH_OUTPUT_ROOTS)"),
        "config": Param(os.environ.get("GLYPH_TRAIN_CONFIG", "configs/train/{stage}.yaml"), type="string",
                        description="Each stage's config; {stage} becomes pretrain, sft, rl "
                                    "(e.g. configs/train/{stage}-glm41v-9b.yaml)"),
        "max_steps": Param(int(MAX_STEPS) if MAX_STEPS else None, type=["null", "integer"], minimum=1,
                           description="Steps per stage; empty: each config's own"),
        "launcher": Param(os.environ.get("GLYPH_TRAIN_LAUNCHER", "local"), enum=["local", "kubernetes", "slurm"],
                          description="How jobs reach the GPUs: local subprocess, a Kubernetes Job (GLYPH_K8S_*) "
                                      "or Slurm sbatch (GLYPH_SLURM_*)"),
    },
)
def glyph_train():
    def run(stage: str, model: str, data: str, params: dict, run_id: str) -> str:
        from pipeline import storage
        from pipeline.orchestration import orchestrate

        output = storage.join(params["output_uri"], orchestrate.run_folder(run_id), stage)
        return orchestrate.train_stage(stage, params["config"].format(stage=stage), model, data, output,
                                       params["max_steps"], params["launcher"], run_key=f"glyph_train/{run_id}")

    @task(**STAGE)
    def pretrain(params=None, run_id=None, triggering_asset_events=None) -> str:
        from pipeline.orchestration import orchestrate

        events = triggering_asset_events.get(DATASET, []) if triggering_asset_events else []
        return run("pretrain", params["model"], orchestrate.datasets_from_events(events, params["data"]), params, run_id)

    @task(**STAGE)
    def sft(model: str, params=None, run_id=None) -> str:
        return run("sft", model, params["sft_data"], params, run_id)

    @task(**STAGE)
    def rl(model: str, params=None, run_id=None) -> str:
        return run("rl", model, params["sft_data"], params, run_id)

    rl(sft(pretrain()))


glyph_train()
