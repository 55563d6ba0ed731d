"""Exporting a detector to ONNX / TorchScript and running the exported file.

:mod:`graph` (what is traced), :mod:`writers` (one function per format), :mod:`formats`
(recognising a file by content; its metadata), :mod:`verify` (exported vs PyTorch),
:mod:`runtime` (:class:`~nuimcli.export.runtime.ExportedModel`, the ``predict`` contract).
The orchestration is :func:`nuimcli.engine.export.export_model`.
"""
