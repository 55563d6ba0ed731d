"""nuImages data: tables, conversion to COCO, synthetic data, datasets and transforms."""
