"""Imports every module that defines tables, so ``Base.metadata`` knows the whole schema.

Alembic's env.py and the schema-drift test import this; a new models module is added here.
"""

import connectors.server.models  # noqa: F401
import tenants.models  # noqa: F401
