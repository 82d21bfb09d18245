# One image for the Ray head and workers, the MLflow server and the scheduler.
# CPU-only build: docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .
# (the default TORCH_SPEC takes PyPI's Linux wheel, which carries CUDA, for the GPU workers).
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, so that code changes rebuild only the last layers.
COPY pyproject.toml README.md ./
COPY stef_ray ./stef_ray
RUN pip install ${TORCH_SPEC} . "psycopg2-binary>=2.9"
COPY serve_config.yaml ./
COPY tune_configs ./tune_configs

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["stef-ray", "--help"]
