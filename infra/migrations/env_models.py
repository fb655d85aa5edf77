"""Imports every module that defines tables, so ``Base.metadata`` knows the whole schema.

Alembic's env.py and the schema-drift test import this; a new models module is added here.
"""

import importlib

MODEL_MODULES = (
    "tenants.models",
    "connectors.server.models",
    "connectors.server.jobs.models",
    "billing.models",
    "billing.usage.models",
    "billing.ledger.models",
)

for _name in MODEL_MODULES:
    importlib.import_module(_name)
