"""glyph_train: pre-training, then SFT, then RL, each stage's exported model feeding the next.

Scheduled on the glyph_corpus Asset (a new dataset version) and triggerable by hand. A stage
is a job started by a launcher (local deepspeed subprocess by default); its log streams into
the task log, a failed job fails the task with the job's error, and a retried task resumes
from the stage's checkpoint. Wiring only; the work is in pipeline.orchestrate.
"""

import os
from datetime import timedelta

from airflow.sdk import Asset, Param, dag, task

from pipeline import alerts

DATASET = Asset(name="glyph_corpus", uri=os.environ.get("GLYPH_DATASET_URI", "file:///glyph/corpus"))
STAGE = dict(retries=2, retry_delay=timedelta(seconds=int(os.environ.get("GLYPH_STAGE_RETRY_DELAY_S", "60"))),
             retry_exponential_backoff=True, execution_timeout=timedelta(days=3), **alerts.TASK_CALLBACKS)


@dag(
    schedule=[DATASET],
    catchup=False,
    max_active_runs=1,
    tags=["glyph"],
    on_failure_callback=alerts.run_failed,
    params={
        "model": Param("out/tiny-model", type="string", description="Starting model: folder, hub id or s3://"),
        "data": Param("out/demo/rendered", type="string", description="Rendered shards for pre-training"),
        "sft_data": Param("data/sample/sft.jsonl", type="string", description="Chat JSONL for SFT and RL"),
        "output_uri": Param("out/airflow/train", type="string", description="Each stage writes OUTPUT/<stage>"),
        "config": Param("configs/train/{stage}.yaml", type="string",
                        description="Each stage's config; {stage} becomes pretrain, sft, rl "
                                    "(e.g. configs/train/{stage}-glm41v-9b.yaml)"),
        "max_steps": Param(2, type=["null", "integer"], minimum=1,
                           description="Steps per stage; empty: each config's own"),
        "launcher": Param("local", enum=["local", "kubernetes", "slurm"],
                          description="How jobs reach the GPUs: local subprocess, a Kubernetes Job (GLYPH_K8S_*) "
                                      "or Slurm sbatch (GLYPH_SLURM_*)"),
    },
)
def glyph_train():
    def run(stage: str, model: str, data: str, params: dict, run_id: str) -> str:
        from pipeline import orchestrate, storage

        return orchestrate.train_stage(stage, params["config"].format(stage=stage), model, data,
                                       storage.join(params["output_uri"], stage), params["max_steps"],
                                       params["launcher"], run_key=f"glyph_train/{run_id}")

    @task(**STAGE)
    def pretrain(params=None, run_id=None) -> str:
        return run("pretrain", params["model"], params["data"], params, run_id)

    @task(**STAGE)
    def sft(model: str, params=None, run_id=None) -> str:
        return run("sft", model, params["sft_data"], params, run_id)

    @task(**STAGE)
    def rl(model: str, params=None, run_id=None) -> str:
        return run("rl", model, params["sft_data"], params, run_id)

    rl(sft(pretrain()))


glyph_train()
