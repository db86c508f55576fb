"""One rank of test_ddp.py's 2-process job, started with the environment torchrun would give it
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). It runs the PSNR stage and then the GAN
stage exactly as ``srseg train --stage`` does: each ``run_train`` joins the process group from that
environment and destroys it at the end. Each stage gets its own MASTER_PORT because a default
group re-created on the same rendezvous store would read the first group's stale keys (one
torchrun job per stage avoids this in production)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from srseg.config import parse_params
from srseg.stages.train import run_train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--ports", required=True, help="MASTER_PORT of the psnr and gan stages, comma-separated")
    args = parser.parse_args()
    params = parse_params(json.loads(args.params.read_text()), str(args.params))
    for stage, port in zip(("psnr", "gan"), args.ports.split(","), strict=True):
        os.environ["MASTER_PORT"] = port
        run_train(params, stage)


if __name__ == "__main__":
    main()
