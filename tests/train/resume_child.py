"""Child process of test_resume.py: trains the GAN stage and SIGKILLs itself right after the
checkpoint of iteration ``--kill-at`` is on disk (no cleanup, like a pre-empted node)."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

from srseg.config import parse_params
from srseg.stages.train import run_train
from srseg.train.engine import TrainHooks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--init-from", type=Path, required=True)
    parser.add_argument("--kill-at", type=int, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    args = parser.parse_args()
    params = parse_params(json.loads(args.params.read_text()), str(args.params))
    ids = args.ids.open("a", encoding="utf-8")

    def after_step(iteration: int, sample_ids: list[int]) -> None:
        ids.write(json.dumps([iteration, sample_ids]) + "\n")
        ids.flush()

    def after_checkpoint(iteration: int, path: Path) -> None:
        if iteration == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    run_train(
        params,
        "gan",
        output_dir=args.output,
        init_from=args.init_from,
        hooks=TrainHooks(after_step=after_step, after_checkpoint=after_checkpoint),
    )


if __name__ == "__main__":
    main()
