"""The jobs suite's fixtures (the real gateway on a task queue of the test's own, an owner with an API key),
shared with the fault tests that drive jobs."""

from tests.jobs.conftest import app, http, jsettings, owner, queue

__all__ = ["app", "http", "jsettings", "owner", "queue"]
