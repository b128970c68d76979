"""The operator compatibility table: which torch ops survive export to ONNX and run right, per target.

Measured from the runtimes themselves (``python -m modelcheck.ops``): one probe model per
operator variant (:mod:`modelcheck.ops.probes`), exported at each (target, opset), run on ONNX
Runtime and the real Caffe2, compared with PyTorch. Rules read it through
:mod:`modelcheck.ops.table`, which imports no torch. See ``README.md`` beside this file.
"""
