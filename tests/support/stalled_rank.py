"""Two ranks set up as a training stage sets them up; rank 1 then stalls while rank 0 waits in a collective.

    torchrun --nproc-per-node 2 tests/support/stalled_rank.py DDP_TIMEOUT_S OUTPUT_DIR
"""

import os
import sys
import time

import torch.distributed as dist

from training.config import TrainConfig
from training.trainer import stage_output, training_arguments


def main():
    cfg = TrainConfig(ddp_timeout=int(sys.argv[1]), deepspeed="none", output_dir=sys.argv[2])
    args = training_arguments(cfg, stage_output(cfg))
    print(f"rank {args.process_index} of {args.world_size} ready", flush=True)
    if dist.get_rank() == 1:
        time.sleep(90)  # out of step: never joins the barrier
        os._exit(0)
    started = time.time()
    try:
        dist.barrier()
    except RuntimeError as err:
        print(f"rank 0 gave up after {time.time() - started:.1f} s: {str(err).splitlines()[0]}", flush=True)
        os._exit(3)
    print("rank 0 passed the barrier", flush=True)


if __name__ == "__main__":
    main()
