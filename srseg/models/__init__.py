"""Generator (shared decoder, SR + segmentation heads), discriminator and losses."""
