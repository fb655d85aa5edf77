"""Cluster connectors: the agent protocol, the agent, cluster runtimes, and the control-plane side.

``connectors.protocol``, ``connectors.agent`` and ``connectors.runtimes`` import nothing of the
control plane (an import-linter contract checks it) so the agent can ship as its own package.
"""
