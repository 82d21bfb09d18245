# Two images from one file:
#   app (default): the Ray head and workers and the scheduler: stef-ray with torch, Ray and MLflow.
#   mlflow: the tracking server alone, on a slim Python with mlflow and the PostgreSQL driver only.
# CPU-only app build: docker build --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" .
# (the default TORCH_SPEC takes PyPI's Linux wheel, which carries CUDA, for the GPU workers).

FROM python:3.11-slim AS mlflow
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY constraints.txt /tmp/constraints.txt
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
    && pip install -c /tmp/constraints.txt mlflow "psycopg2-binary>=2.9"
EXPOSE 5000
CMD ["mlflow", "server", "--host=0.0.0.0", "--port=5000"]

FROM python:3.11-slim AS app
ARG TORCH_SPEC="torch==2.13.0"
# One BLAS and one OpenMP thread per process, as `stef-ray` sets for itself (stef_ray/threads.py): the Ray
# processes of `ray start` (Serve replicas, job drivers' workers) read these too; Ray spreads the work.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, from pyproject.toml alone and pinned by constraints.txt: a code change rebuilds only
# the layers below, not torch and Ray.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install ${TORCH_SPEC} \
    && pip install -c constraints.txt -r /tmp/requirements.txt
COPY README.md ./
COPY stef_ray ./stef_ray
RUN pip install --no-deps .
COPY serve_config.yaml ./
COPY tune_configs ./tune_configs
COPY deploy/monitor.yaml ./deploy/monitor.yaml

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["stef-ray", "--help"]
