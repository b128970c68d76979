"""The static pass: discovering files (``run``) and reading them with libcst (``source``). Never imports torch."""
