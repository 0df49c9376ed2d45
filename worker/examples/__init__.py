"""Example handlers bundled with the worker.

``inferbox-worker --handler worker.examples.digits:predict`` serves the digits model.
"""
