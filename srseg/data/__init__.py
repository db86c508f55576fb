"""COCO-Stuff data: download, label maps, class map, manifests and the training dataset."""
