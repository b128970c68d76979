"""The dynamic pass: ``run`` (parent, no torch) starts ``job`` (child) to build and trace each model."""
