"""MLOps: a model registry with stages, and the promotion policy between them."""
