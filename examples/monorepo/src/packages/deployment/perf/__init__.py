"""The release's load test (perf.load_test)."""
