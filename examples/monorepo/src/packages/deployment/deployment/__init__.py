"""Deployment: blue-green releases, health checks and rollback."""
