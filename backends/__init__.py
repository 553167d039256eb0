"""The built-in backends, installed as ``pipeline.backends``: one folder each.

Each is a `pipeline.core.backend.Backend` subclass, found by name through the
``pipeline.backends`` entry-point group (``pyproject.toml``), and imports only
the contract module and torch (plus its own runtime).
"""
