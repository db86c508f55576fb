# srseg image: one image for every pipeline step (KFP components use it as base_image, the
# multi-node TrainJob runs it too). `docker build -t srseg:0.1.0 .`, then
# `srseg pipeline compile --image <registry>/srseg:0.1.0`.
#
# CUDA: torch is installed from PyTorch's cu130 wheel index, so the runtime base is CUDA 13.0 as
# well. Change both together (tests/test_dockerfile.py checks that they agree).
ARG CUDA_BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_BASE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04 images ship a user "ubuntu" with uid 1000: it makes way for srseg (uid 1000).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --create-home --uid 1000 --user-group srseg

WORKDIR /app
# Dependencies first (pinned: torch/torchvision/kfp/mlflow/dvc in pyproject.toml, the rest bounded
# by constraints.txt): this layer is reused until those files change, not on every source edit.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p srseg && touch srseg/__init__.py \
 && pip install --extra-index-url "${TORCH_INDEX_URL}" -c constraints.txt . \
 && pip uninstall -y srseg \
 && rm -rf srseg

COPY srseg ./srseg
RUN pip install --no-deps -c constraints.txt . \
 && python -c "import srseg.cli, kfp, kubernetes, torch"
COPY params.yaml dvc.yaml ./
COPY profiles ./profiles

# Non-root. /app itself is writable (relative outputs such as a default sqlite MLflow store);
# the code is not. /gcs, /minio and /s3 are where KFP's launcher stages artifacts: created here
# for backends that do not mount them, since a non-root user cannot create them at run time.
RUN chown srseg:srseg /app \
 && install -d -o srseg -g srseg /gcs /minio /s3
USER 1000:1000
ENTRYPOINT ["srseg"]
CMD ["--help"]
