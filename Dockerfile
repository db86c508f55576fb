# srseg image: one image for every pipeline step (KFP components use it as base_image, the
# multi-node TrainJob runs it too). Build it with `make image` (see README, "Container image"):
# air-gapped by default, from a locally built Debian bookworm base and a wheelhouse of the lock.
#
#   make image                                        local base (debootstrap), no registry needed
#   make image BASE=nvidia/cuda:13.0.1-base-ubuntu22.04   where that base can be pulled
#
# CUDA: the torch cu130 wheels bring CUDA 13.0's user-space libraries (cudart, cuBLAS, cuDNN, NCCL,
# ...) as pip packages, so the base needs no CUDA libraries of its own: the GPU driver comes from
# the node (NVIDIA container toolkit, enabled by the NVIDIA_* variables below). A `cuda:*-runtime`
# or `-cudnn-runtime` base would hold a second copy of those libraries (~3 GB).
#
# Python: 3.11, the version of development and CI (the lock's wheels are cp311). A base without it
# gets python3.11 from its package archive (Ubuntu 22.04 has it; 24.04 does not).
#
# Stages: python (base + Python + user) -> deps (venv from the lock) -> app (srseg from source)
# -> final (python + the two venv trees). pip's wheelhouse, the source tree and any build tools
# stay in the earlier stages. The deps stage depends on requirements.lock and the wheelhouse only,
# so a source or docs edit does not reinstall torch.
ARG BASE_IMAGE=srseg-base:bookworm

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The local base has python3.11; another base gets it from its package archive. Ubuntu 24.04
# images ship a user "ubuntu" with uid 1000: it makes way for srseg (uid 1000).
RUN if ! python3.11 -c "import venv" 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --create-home --uid 1000 --user-group --shell /bin/bash srseg

FROM python AS deps
# Exactly the lock: every distribution pinned and hashed, no index, no dependency resolution. pip
# too comes from the lock (its wheel runs itself once its hash is checked), not from the base.
COPY requirements.lock /tmp/lock/requirements.lock
COPY wheelhouse /tmp/wheelhouse
RUN set -e; cd /tmp/wheelhouse \
 && pip_wheel=$(ls pip-*.whl) \
 && pip_hash=$(grep -A1 "^pip==" /tmp/lock/requirements.lock | grep -o "sha256:[0-9a-f]*" | cut -d: -f2) \
 && echo "${pip_hash}  ${pip_wheel}" | sha256sum -c - \
 && python3.11 -m venv --without-pip /opt/venv \
 && /opt/venv/bin/python "${pip_wheel}/pip" install --no-index --find-links /tmp/wheelhouse --require-hashes \
      --no-deps -r /tmp/lock/requirements.lock \
 && /opt/venv/bin/python -m pip check

FROM deps AS app
# srseg itself, from source, into its own tree (merged into the venv by the final stage).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY srseg ./srseg
RUN /opt/venv/bin/python -m pip install --no-index --no-deps --no-build-isolation --prefix /opt/app . \
 && test -x /opt/app/bin/srseg

FROM python AS final
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /opt/app/ /opt/venv/
WORKDIR /app
COPY params.yaml dvc.yaml ./
COPY profiles ./profiles
# Pretrained weights, optional: `make image WEIGHTS=<folder>` stages VGG19 (perceptual loss) and
# the LPIPS AlexNet backbone into container/weights/, which becomes torch hub's cache here, where
# `train.loss.vgg_weights: auto` and `evaluate.lpips_weights: auto` look (nothing is downloaded at
# run time). Without staged files the cache stays empty and the pipeline's preflight says so.
ENV TORCH_HOME=/opt/torch
COPY container/weights/ /opt/torch/hub/checkpoints/
# Non-root. /app itself is writable (relative outputs such as a default sqlite MLflow store);
# the code is not. /gcs, /minio and /s3 are where KFP's launcher stages artifacts: created here
# for backends that do not mount them, since a non-root user cannot create them at run time.
RUN chown srseg:srseg /app \
 && install -d -o srseg -g srseg /gcs /minio /s3 \
 && python -c "import srseg.cli, kfp, kubernetes, torch"

# Last, so a new commit only changes metadata layers. GIT_COMMIT is the fallback of the runs' and
# model versions' git_commit tag (there is no .git in the image).
ARG VERSION=0.1.0
ARG GIT_COMMIT=
ARG SOURCE=
LABEL org.opencontainers.image.title="srseg" \
      org.opencontainers.image.description="Multitask super-resolution + COCO-Stuff segmentation pipeline (Rad et al., arXiv 1907.12488)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV SRSEG_GIT_COMMIT=${GIT_COMMIT}
USER 1000:1000
ENTRYPOINT ["srseg"]
CMD ["--help"]
