"""The benchmark stage: ``benchmark.methods`` on ``benchmark.sets`` (:mod:`srseg.evaluate.benchmark`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from srseg.config import Params


def run_benchmark(
    params: Params, output_dir: Path | None = None, methods: dict[str, str] | None = None, sets: list[str] | None = None
) -> dict[str, Any]:
    """Score the methods (``{seed}`` expanded over ``train.seeds``) on the benchmark sets named in
    ``sets`` (default: all of ``benchmark.sets``) at ``train.scale``; ``methods`` replaces
    ``benchmark.methods``. Returns ``{"sets": {name: per-set metrics}, "meta": ...}``."""
    from srseg.evaluate.benchmark import benchmark
    from srseg.seeds import expand_methods
    from srseg.stages.evaluate import tracking_uri

    cfg = params.benchmark
    unknown = [name for name in sets or [] if name not in cfg.sets]
    if unknown:
        raise ValueError(f"benchmark set(s) {unknown} are not in benchmark.sets ({', '.join(cfg.sets)})")
    seeded = expand_methods(methods or cfg.methods, params.train.seeds)
    return benchmark(
        seeded.specs,
        {name: folder for name, folder in cfg.sets.items() if not sets or name in sets},
        params.train.scale,
        Path(output_dir or cfg.output_dir),
        groups=seeded.groups,
        lpips_weights=cfg.lpips_weights,
        bootstrap=cfg.bootstrap,
        seed=cfg.seed,
        device=params.train.device,
        tracking_uri=tracking_uri(params),  # resolves models:/ methods; nothing is logged
    )
