from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.connectors.kube_emulator import KubeEmulator, kube_emulator


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    async with kube_emulator() as emulator:
        yield emulator


@pytest.fixture
async def runtime(kube: KubeEmulator) -> AsyncIterator[KubernetesRuntime]:
    rt = KubernetesRuntime(host=kube.url, request_timeout_s=5)
    yield rt
    await rt.aclose()
