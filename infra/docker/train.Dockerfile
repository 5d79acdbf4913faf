# The training image: CUDA, torch, DeepSpeed and the `training` package, run by the Kubernetes
# Job (infra/k8s/training-job.yaml) or on Slurm nodes. Build from the repo root:
#   docker build -f infra/docker/train.Dockerfile -t glyph-train:0.1.0 .
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git build-essential ninja-build libaio-dev \
        poppler-utils fontconfig fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji \
 && rm -rf /var/lib/apt/lists/*
# A standalone Python 3.11, the version the project is tested with.
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
RUN uv venv --python 3.11 /opt/venv

WORKDIR /opt/glyph
# torch with its CUDA 12.8 libraries, pinned to the project's version, before anything pulls it in.
RUN uv pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cu128
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY training ./training
COPY configs ./configs
COPY fonts ./fonts
COPY benchmarks ./benchmarks
RUN uv pip install -e . && python -c "import deepspeed, transformers, training.pretrain"
# DeepSpeed builds its fused ops on first use; keep them between runs on a mounted cache.
ENV TORCH_EXTENSIONS_DIR=/cache/torch_extensions HF_HOME=/cache/huggingface
CMD ["torchrun", "--help"]
