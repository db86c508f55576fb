"""Run-time super-resolution: tiled inference (``tiling``), image conversion (``images``), the
band-by-band PNG writer (``png_stream``) and the ``srseg upscale`` engine (``upscale``).

Nothing is imported here eagerly, so ``import srseg.inference.tiling`` does not pull in Pillow,
MLflow or ONNX Runtime.
"""
