"""Speed and memory measurements (run as modules, not as tests)."""
