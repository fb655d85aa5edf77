"""Daily housekeeping: ``maintenance.daily``, started by the Temporal Schedule of the same name.

Import from the submodules: the workflow sandbox re-imports ``workflow.py``, and it must not pull
activities (and with them SQLAlchemy models) into the sandbox.
"""
