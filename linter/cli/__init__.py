"""The command line: ``main`` (``modelcheck FILE``) and ``audit`` (``modelcheck audit``)."""
