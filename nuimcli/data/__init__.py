"""nuImages data: tables, conversion to COCO, datasets and transforms (synthetic data: ``nuimcli.synthetic``)."""
