"""GPU/CPU training engine of the multitask SR model.

- ``engine``: the ``Trainer`` (G/D steps, EMA, AMP, schedulers, iteration loop, DVC files).
- ``checkpoint``: atomic, checksummed full-state checkpoints and RNG capture.
- ``distributed``: torchrun/DDP setup, the batch/LR scaling rule, the resumable sharded sampler.
- ``validation``: psnr_y/ssim_y of the EMA SR output, mIoU/pixel accuracy of the seg head.
- ``tracking``: MLflow parent/nested runs.

The stage entry point and the output layout are in ``srseg.stages.train``.
"""
