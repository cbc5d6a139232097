"""Plotly figures built from loaded runs, one function per figure family.

Each takes a :class:`~rrlab.analysis.load.Run` (or several, overlaid with a colour per run)
and returns a ``plotly.graph_objects.Figure``; time series are bucketed to at most
``MAX_POINTS`` points per trace so that reports stay small.
"""

from rrlab.analysis.plots._common import MAX_POINTS
from rrlab.analysis.plots.drains import drain_ratios
from rrlab.analysis.plots.flushes import flushes
from rrlab.analysis.plots.lag import replication_lag
from rrlab.analysis.plots.profiles import allocation_sites, heap, hot_lines
from rrlab.analysis.plots.ramp import breaking_point
from rrlab.analysis.plots.resources import resources
from rrlab.analysis.plots.tables import phase_summary, table
from rrlab.analysis.plots.throughput import throughput

__all__ = [
    "MAX_POINTS",
    "allocation_sites",
    "breaking_point",
    "drain_ratios",
    "flushes",
    "heap",
    "hot_lines",
    "phase_summary",
    "replication_lag",
    "resources",
    "table",
    "throughput",
]
