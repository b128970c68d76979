"""modelcheck: will this PyTorch model survive export to ONNX and Caffe2?

The package root must stay light: the pre-commit path (``--static-only``) imports it and
must never pay for torch.
"""

__version__ = "0.1.0"
