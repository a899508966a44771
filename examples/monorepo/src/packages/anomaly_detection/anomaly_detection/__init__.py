"""Anomaly detection: flags observations far from what a forecaster expects."""
