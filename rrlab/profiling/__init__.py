"""Profiling: memray, line-profiler, py-spy, and the always-on process samplers."""
