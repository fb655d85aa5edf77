"""The REST API under /api/v1 (JSON, described at /schema/openapi.json)."""
