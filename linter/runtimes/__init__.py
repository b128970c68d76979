"""Runtimes that live outside this interpreter (Caffe2 in its own root file system)."""
