"""The example's own checkers: SARIF for secrets and compliance, technical debt."""
