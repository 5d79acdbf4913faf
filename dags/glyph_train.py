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
             execution_timeout=timedelta(days=3), **alerts.TASK_CALLBACKS)


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
        "max_steps": Param(2, type="integer", minimum=1, description="Steps per stage (the configs' own if large)"),
        "launcher": Param("local", enum=["local"], description="How jobs reach the GPUs"),
    },
)
def glyph_train():
    def run(stage: str, model: str, data: str, params: dict) -> str:
        from pipeline import orchestrate, storage

        return orchestrate.train_stage(stage, f"configs/train/{stage}.yaml", model, data,
                                       storage.join(params["output_uri"], stage), params["max_steps"],
                                       params["launcher"])

    @task(**STAGE)
    def pretrain(params=None) -> str:
        return run("pretrain", params["model"], params["data"], params)

    @task(**STAGE)
    def sft(model: str, params=None) -> str:
        return run("sft", model, params["sft_data"], params)

    @task(**STAGE)
    def rl(model: str, params=None) -> str:
        return run("rl", model, params["sft_data"], params)

    rl(sft(pretrain()))


glyph_train()
