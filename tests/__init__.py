"""The test suite (a regular package, so `tests.*` never resolves to an installed `tests`)."""
