"""Compile the training pipeline to KFP IR YAML.

    python -m pipelines.compile --output pipelines/training_pipeline.yaml --image srseg:0.1.0

This is the compile entry of the project: the pipeline definition (``training_pipeline.py``) and
its components live in the checkout, not in the ``srseg`` library, so ``srseg pipeline compile``
(and run/submit with pod options) runs this module as a program in the checkout instead of
importing the project's folders. The output is written atomically: a failed compile keeps the old
file. Bad options exit 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from srseg.pipeline import DEFAULT_IMAGE, MOUNT_PATH


def compile_to(
    output: Path,
    image: str = DEFAULT_IMAGE,
    mount_path: str = MOUNT_PATH,
    image_pull_secrets: Sequence[str] = (),
    run_as_user: int | None = 1000,
    run_as_group: int | None = 1000,
) -> Path:
    """Write the IR YAML of :func:`pipelines.training_pipeline.build_pipeline` to ``output``."""
    from kfp import compiler

    from pipelines.training_pipeline import build_pipeline

    pipeline = build_pipeline(
        image,
        mount_path,
        image_pull_secrets=tuple(image_pull_secrets),
        run_as_user=run_as_user,
        run_as_group=run_as_group,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        staged = Path(tmp) / output.name
        compiler.Compiler().compile(pipeline, str(staged))
        os.replace(staged, output)
    return output


def _user_id(text: str) -> int | None:
    return None if text == "none" else int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--mount-path", default=MOUNT_PATH)
    parser.add_argument("--image-pull-secret", action="append", default=[])
    parser.add_argument("--run-as-user", type=_user_id, default=1000, help="uid, or 'none' for the image's user")
    parser.add_argument("--run-as-group", type=_user_id, default=1000, help="gid, or 'none'")
    args = parser.parse_args(argv)
    try:
        out = compile_to(
            args.output, args.image, args.mount_path, args.image_pull_secret, args.run_as_user, args.run_as_group
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
