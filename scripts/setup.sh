#!/usr/bin/env bash
# Idempotent set-up: Debian packages, the virtual environment at .venv, the project.
set -euo pipefail
cd "$(dirname "$0")/.."

# slurm-wlm and munge: the tests start a real one-node Slurm cluster for the Slurm launcher.
# chromium: the browser the UI tests drive through Playwright (its own browser download cannot work here).
# fonts-noto-*: free fonts for the world's scripts and colour emoji (the renderer's fallback chain);
# tesseract-ocr-{ara,heb,hin,tha} and pango1.0-tools: the shaping tests read pages back against a Pango reference.
APT_PACKAGES=(poppler-utils tesseract-ocr tesseract-ocr-eng slurm-wlm munge chromium
              fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji
              tesseract-ocr-ara tesseract-ocr-heb tesseract-ocr-hin tesseract-ocr-tha pango1.0-tools)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: 2.13.0 is the CPU build on local disk; anything looser
# pulls a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[test,airflow]"
