"""The export-and-runtime smoke test: ``run`` (parent) starts ``job`` (child) per model."""
