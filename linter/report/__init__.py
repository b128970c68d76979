"""Reports: the terminal (``terminal``), SARIF (``sarif``) and a self-contained HTML page (``html``)."""
