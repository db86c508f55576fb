# The two commands of the README: `make run` and `make test`. Each sets up .venv by itself.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE_DIR ?= ../shared/data/cocostuff-sample
PROFILE ?=
export PATH := $(BIN):$(PATH)

IMAGE ?= srseg:0.1.0
BASE ?=
WEIGHTS ?=
.PHONY: setup browser run test lint mirror profile remote bench clean image test-image lock engine engine-stop image-clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes. torch/torchvision are pinned with == so pip takes
# the local wheels instead of resolving a multi-GB download.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# A local COCO-layout mirror of the real sample data; the demo profile downloads from it.
mirror: $(STAMP)
	srseg mirror build --sample $(SAMPLE_DIR) --output data/mirror

profile: $(STAMP)
	@if [ -n "$(PROFILE)" ]; then srseg profile use $(PROFILE); fi

# The main job: the DVC pipeline (download ... export), then registration (a no-op when this SR
# head is registered already) and the gated promotion. Both change the shared MLflow registry,
# which is why they are not DVC stages: `dvc exp run` sweeps never touch it.
run: $(STAMP) mirror profile
	dvc repro
	srseg register
	srseg promote --allow-reject
	@echo
	@echo "done. Look at:"
	@echo "  dvc metrics show                     validation + evaluation numbers"
	@echo "  outputs/evaluate/summary.md, gallery.html   per-class tables and side-by-side crops"
	@echo "  outputs/report/report.html           the science report (benchmarks, seeds, per-class gains, curves)"
	@echo "  outputs/benchmark/*/benchmark.md      Set5/Set14 x4 psnr_y/ssim_y tables"
	@echo "  outputs/export/MODEL_CARD.md         the shipped SR head"
	@echo "  mlflow ui --backend-store-uri sqlite:///mlflow.db   runs + registry (@challenger, @champion)"
	@echo "  srseg study serve                    the user study (invite raters with srseg study invite)"

# Debian's Chromium for the user-study browser test (Playwright drives it; no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make browser: run 'sudo apt-get install chromium' for the browser test" >&2; exit 1; fi; \
	fi

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

# ruff (configuration in pyproject.toml): lint rules and the formatting check; mypy on the typed
# core (params schema, networks, model registry; [tool.mypy] in pyproject.toml). Runs before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy srseg/config.py srseg/models/ srseg/registry/

# The container image, built here without a registry (local Debian base + wheelhouse of the lock):
# `make image`, or `make image BASE=nvidia/cuda:13.0.1-base-ubuntu22.04` where bases can be pulled;
# `make image WEIGHTS=<folder>` bakes VGG19 + LPIPS weights into the image's torch hub cache.
# dockerd is private (container/engine.py, data under $${SRSEG_DOCKER_ROOT:-/tmp/srseg-docker}).
image: $(STAMP)
	$(BIN)/python container/build.py --tag $(IMAGE) $(if $(BASE),--base $(BASE)) $(if $(WEIGHTS),--weights $(WEIGHTS))

# Image tests (marker `image`, not in `make test`): build when needed, then the image checks and
# the demo pipeline with every step in its own container (kfp.local DockerRunner).
test-image: $(STAMP)
	SRSEG_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -m image tests/container

# requirements.lock from this environment's versions (container/lock.py)
lock: $(STAMP)
	$(BIN)/python container/lock.py

engine:
	python3 container/engine.py start
engine-stop:
	python3 container/engine.py stop
image-clean: engine-stop
	rm -rf $${SRSEG_DOCKER_ROOT:-/tmp/srseg-docker} wheelhouse wheelhouse.tmp

# Points the DVC remote `storage` (S3) at $SRSEG_DVC_BUCKET[/$SRSEG_DVC_PREFIX] in the git-ignored
# .dvc/config.local. Endpoint and credentials stay in the environment (AWS_ENDPOINT_URL, AWS_*),
# read by `dvc push` / `dvc pull` themselves.
remote:
	@test -n "$$SRSEG_DVC_BUCKET" || { echo "make remote: set SRSEG_DVC_BUCKET (and AWS_ENDPOINT_URL for a non-AWS S3)" >&2; exit 2; }
	dvc remote modify --local storage url "s3://$$SRSEG_DVC_BUCKET/$${SRSEG_DVC_PREFIX:-dvc}"
	@echo "DVC remote 'storage' -> s3://$$SRSEG_DVC_BUCKET/$${SRSEG_DVC_PREFIX:-dvc} (endpoint: $${AWS_ENDPOINT_URL_S3:-$${AWS_ENDPOINT_URL:-AWS default}})"

bench: $(STAMP)
	$(BIN)/python bench/degrade.py

clean:
	rm -rf $(VENV) data .dvc/cache .dvc/tmp
