"""The agent protocol's wire version, shared by the agent and the gateway's agent API."""

from __future__ import annotations

__all__ = ["AGENT_VERSION", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = "v1"
AGENT_VERSION = "0.1.0"
