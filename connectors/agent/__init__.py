"""The outbound-only cluster agent (``metacloud-agent``).

Start one in-process (as the integration tests do)::

    agent = Agent(AgentConfig(server_url=..., token=..., state_dir=tmp), make_runtime("local", state_dir=tmp))
    code = await agent.run(stop_event)
"""

from connectors.agent.client import AgentClient, CommandGone, Fatal, Transient
from connectors.agent.config import AgentConfig, ConfigError
from connectors.agent.credentials import (
    CredentialStore,
    FileCredentialStore,
    MemoryCredentialStore,
    SecretCredentialStore,
    StoredCredential,
)
from connectors.agent.loop import Agent, backoff_delay

__all__ = [
    "Agent",
    "AgentClient",
    "AgentConfig",
    "CommandGone",
    "ConfigError",
    "CredentialStore",
    "Fatal",
    "FileCredentialStore",
    "MemoryCredentialStore",
    "SecretCredentialStore",
    "StoredCredential",
    "Transient",
    "backoff_delay",
]
