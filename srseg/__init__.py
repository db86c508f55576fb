"""srseg: multitask super-resolution + COCO-Stuff segmentation (Rad et al., arXiv 1907.12488)."""

__version__ = "0.1.0"
