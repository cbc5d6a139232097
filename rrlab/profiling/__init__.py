"""Profiling: memray, line-profiler, py-spy, and the always-on process samplers.

Kept free of imports: the consumer imports :mod:`rrlab.profiling.line_profile` at start-up,
and nothing heavy (polars) may ride along into the process being profiled.
"""
