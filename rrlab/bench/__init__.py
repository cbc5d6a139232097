"""Benchmarks that run as their own commands (``rrlab bench …``), never inside the test suite."""
