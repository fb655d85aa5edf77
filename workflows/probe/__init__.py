"""The probe: one durable round trip gateway -> Temporal -> worker -> database.

Import from the submodules: the workflow sandbox re-imports this package, and it must not pull
activities (and with them SQLAlchemy models) into the sandbox.
"""
