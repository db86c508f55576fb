#!/usr/bin/env bash
# Run bench/gpu_check.py on a GPU machine (see its docstring); extra arguments are passed on.
#   bash bench/gpu_check.sh                    # writes gpu_check.json in the repository root
#   bash bench/gpu_check.sh --tiny --device cuda --out /tmp/smoke.json   # 1-minute smoke run first
# Environment:
#   PYTHON              interpreter (default: .venv/bin/python if present, else python3)
#   SRSEG_TEST_DATA     folder with cocostuff-sample/ and set5/ (default: ../shared/data)
#   GPU_CHECK_WHEELS    folder of wheels for packages the machine lacks (offline machines): installed
#                       with --no-index into a temporary folder put on PYTHONPATH, nothing else touched
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  site="$(mktemp -d -t srseg-gpu-check-site.XXXXXX)"
  trap 'rm -rf "$site"' EXIT
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$GPU_CHECK_WHEELS"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c 'import torch; print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}", flush=True)'
"$PYTHON" bench/gpu_check.py "$@"
