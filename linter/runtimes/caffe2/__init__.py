"""Caffe2 1.7.1 in a Debian bullseye root file system: ``run`` (parent: install, run) and ``job`` (inside the root)."""
