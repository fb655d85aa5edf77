"""The probe: one durable round trip gateway -> Temporal -> worker -> database."""

from workflows.probe.activities import ProbeActivities
from workflows.probe.types import ProbeInput, ProbeResult
from workflows.probe.workflow import ProbeWorkflow

__all__ = ["ProbeActivities", "ProbeInput", "ProbeResult", "ProbeWorkflow"]
