"""Build of rrlab's C extensions (pgoutput tuple walker, JSON value walks); the rest: pyproject."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("rrlab.replication._tuples", ["rrlab/replication/_tuples.c"]),
        Extension("rrlab.service._json_walk", ["rrlab/service/_json_walk.c"]),
    ]
)
