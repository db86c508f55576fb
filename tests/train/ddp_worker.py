"""One rank of test_ddp.py's 2-process job, started with the environment torchrun gives a worker
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, TORCHELASTIC_USE_AGENT_STORE=True). Like torchrun's
agent, the test hosts the rendezvous store (bound to port 0, port read back) and every rank joins
it as a client, so no port is chosen by one process and bound by another.

It runs the PSNR stage and then the GAN stage exactly as ``srseg train --stage`` does: each
``run_train`` joins the process group and destroys it at the end. Each stage has its own store
(``--ports``): a default group re-created on the same store would read the first group's stale keys
(in production each stage is its own torchrun job). ``--probe-dir`` receives this rank's starting
weights and first-step gradients per stage. ``--plant per_rank_seg`` deliberately breaks the
objective (segmentation CE normalised per rank instead of over the global batch) so the test can
show that its equivalence check rejects a wrong DDP implementation.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from trainkit import FirstStepProbe

from srseg.config import parse_params
from srseg.stages.train import run_train
from srseg.train.engine import Trainer

PLANTS = ("none", "per_rank_seg")


def _per_rank_seg_term(self: Trainer, logits, label):  # type: ignore[no-untyped-def]
    """The bug: each rank's CE mean over its own labelled pixels, then DDP's rank average."""
    return self.seg_loss(logits.float(), label)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--ports", required=True, help="store port of the psnr and gan stages, comma-separated")
    parser.add_argument("--probe-dir", type=Path, required=True)
    parser.add_argument("--plant", choices=PLANTS, default="none")
    args = parser.parse_args()
    if args.plant == "per_rank_seg":
        Trainer._seg_term = _per_rank_seg_term  # type: ignore[method-assign]
    params = parse_params(json.loads(args.params.read_text()), str(args.params))
    rank = int(os.environ["RANK"])
    for stage, port in zip(("psnr", "gan"), args.ports.split(","), strict=True):
        os.environ["MASTER_PORT"] = port
        probe = FirstStepProbe()
        run_train(params, stage, hooks=probe.hooks())
        probe.save(args.probe_dir / f"{stage}_rank{rank}.pt")


if __name__ == "__main__":
    main()
