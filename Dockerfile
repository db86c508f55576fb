# srseg image: one image for every pipeline step (KFP components use it as base_image).
# torch 2.14.1 wheels are CUDA 13.0 builds, so the runtime base matches CUDA 13.0.
ARG CUDA_BASE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app
# Dependencies first: this layer is reused until pyproject.toml / constraints.txt change.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p srseg && touch srseg/__init__.py \
 && pip install -c constraints.txt . \
 && pip uninstall -y srseg

COPY srseg ./srseg
RUN pip install --no-deps -c constraints.txt . \
 && useradd --create-home --uid 1000 srseg
COPY params.yaml dvc.yaml ./
COPY profiles ./profiles

USER srseg
ENTRYPOINT ["srseg"]
CMD ["--help"]
