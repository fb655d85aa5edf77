"""The agent API (``/agent/v1``): registration, heartbeats, the command long poll, install manifests, usage,
job reports.

``AGENT_ROUTES`` lists its handlers for ``gateway.routes``.
"""

from gateway.agent_api.handlers import ack_command, heartbeat, poll_commands, register, report_result
from gateway.agent_api.install import install_manifest
from gateway.agent_api.job_reports import report_jobs
from gateway.agent_api.usage import upload_usage

__all__ = ["AGENT_ROUTES"]

AGENT_ROUTES = [register, heartbeat, poll_commands, ack_command, report_result, install_manifest, upload_usage,
                report_jobs]
