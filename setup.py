"""Build of rrlab's one C extension (the pgoutput tuple walker); the rest is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("rrlab.replication._tuples", ["rrlab/replication/_tuples.c"])])
