"""Machine learning: training and prediction behind ports (hexagonal architecture)."""
