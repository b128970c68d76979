"""Finding, describing and building the user's models: specs, call sites, weight-free building."""
