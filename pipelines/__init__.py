"""Pipeline definitions (``training_pipeline.py``) and their compiled IR (``training_pipeline.yaml``)."""
