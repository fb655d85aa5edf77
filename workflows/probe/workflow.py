from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.probe.types import ProbeInput, ProbeResult


@workflow.defn(name="system.probe")
class ProbeWorkflow:
    @workflow.run
    async def run(self, inp: ProbeInput) -> ProbeResult:
        result: ProbeResult = await workflow.execute_activity(
            "system.record-probe",
            inp,
            result_type=ProbeResult,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return result
