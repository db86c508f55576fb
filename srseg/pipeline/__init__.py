"""Kubeflow Pipelines support: component glue (:mod:`.steps`), the multi-node TrainJob launcher
(:mod:`.trainjob`), the checks that run before anything is scheduled or trained
(:mod:`.preflight`) and the ``srseg pipeline compile|run|submit`` functions (:mod:`.commands`).

Importing this package imports nothing heavy; kfp and kubernetes are imported where used.
"""

DEFAULT_IMAGE = "srseg:0.1.0"  # `docker build -t srseg:0.1.0 .`; `srseg pipeline compile --image` changes it
MOUNT_PATH = "/mnt/srseg"  # where every step mounts the dataset PVC (compile-time)
PIPELINE_PACKAGE = "pipelines/training_pipeline.yaml"  # the committed IR, relative to the project root
