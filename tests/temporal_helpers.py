from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client


async def wait_for_poller(client: Client, queue: str, namespace: str = "default") -> None:
    """A worker registers as a poller a moment after it starts."""
    request = DescribeTaskQueueRequest(namespace=namespace, task_queue=TaskQueue(name=queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)
    for _ in range(100):
        if (await client.workflow_service.describe_task_queue(request)).pollers:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no worker polled {queue} within 5 s")
