"""Application layer: use cases, written against ports."""
