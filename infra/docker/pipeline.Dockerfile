# The pipeline image: Airflow 3 with the DAGs and the `pipeline` package, also run as the Dask
# scheduler and workers (infra/k8s/dask-cluster.yaml, infra/compose). Build from the repo root:
#   docker build -f infra/docker/pipeline.Dockerfile -t glyph-pipeline:0.1.0 .
FROM apache/airflow:3.3.2-python3.11

USER root
# poppler: the pdf backend and pdf2image; tesseract: the offline search evaluator; fonts: DejaVu and Droid
# are bundled in fonts/, Noto for the world's scripts and colour emoji come from Debian (fonts/README.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends poppler-utils tesseract-ocr tesseract-ocr-eng fontconfig \
    fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /opt/glyph && chown airflow:root /opt/glyph
USER airflow

WORKDIR /opt/glyph
# The CPU build of torch first: the pipeline only needs it for the training package's imports;
# GPU jobs run in the training image.
RUN pip install --no-cache-dir "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY --chown=airflow:root pyproject.toml README.md ./
COPY --chown=airflow:root pipeline ./pipeline
COPY --chown=airflow:root training ./training
COPY --chown=airflow:root configs ./configs
COPY --chown=airflow:root fonts ./fonts
COPY --chown=airflow:root infra ./infra
COPY --chown=airflow:root data/sample ./data/sample
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -e ".[airflow]"
# The tiny model the train DAG's defaults use (out/tiny-model): the compose stack trains it on the CPU.
RUN pipeline make-tiny-model out/tiny-model
COPY --chown=airflow:root dags /opt/airflow/dags
