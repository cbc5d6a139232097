"""The rrlab command line: one small module per verb, each mapping flags onto the Python API."""
