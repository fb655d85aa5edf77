"""Cluster workflows: ``clusters.attach``, ``clusters.detach`` and ``clusters.health``.

Import from the submodules: the workflow sandbox re-imports ``workflow.py``, and it must not pull
activities (and with them SQLAlchemy models) into the sandbox.
"""
