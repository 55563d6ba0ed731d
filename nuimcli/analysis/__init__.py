"""Diagnostics computed from ground truth and results: PR data, confusion matrix, COCO error analysis, dataset statistics."""
