"""``modelcheck audit``: one job per model of a repo or zoo (``run``), locally or on Ray (``ray``)."""
