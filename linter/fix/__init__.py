"""--fix: ``run`` (parent) plans and applies the fixers' edits; ``job`` (child) builds models to verify them."""
