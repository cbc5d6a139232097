"""Build of rrlab's C extensions (pgoutput tuple walker, JSON value walks, task_runs_v2 row);
the rest: pyproject."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rrlab.replication._tuples", ["rrlab/replication/_tuples.c"]),
        Extension("rrlab.service._json_walk", ["rrlab/service/_json_walk.c"]),
        Extension("rrlab.service._task_row", ["rrlab/service/_task_row.c"]),
    ]
)
