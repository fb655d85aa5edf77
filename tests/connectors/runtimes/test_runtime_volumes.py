"""The volumes runtimes report for storage metering: Bound claims of the jobs namespace, sized by capacity."""

from __future__ import annotations

from pathlib import Path

import kmock
import pytest

from connectors.runtimes import LocalRuntime, RuntimeFailure, Volume
from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.connectors.kube_emulator import KubeEmulator
from tests.connectors.kube_volumes import CLAIMS, claim, declare_claims

NS = "metacloud-jobs"
GiB = 1 << 30


async def test_bound_claims_of_the_jobs_namespace_are_the_volumes_sized_by_their_capacity(
        kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    declare_claims(kube)
    data = claim(NS, "data", uid="uid-data", size="10Gi")
    data["spec"]["resources"]["requests"]["storage"] = "9Gi"  # the provisioner rounded up: capacity is what is held
    kube.add(CLAIMS, data)
    kube.add(CLAIMS, claim(NS, "scratch", uid="uid-scratch", size="500M"))
    kube.add(CLAIMS, claim(NS, "waiting", uid="uid-waiting", size="5Gi", phase="Pending"))
    kube.add(CLAIMS, claim("team-a", "theirs", uid="uid-theirs", size="1Ti"))  # not the namespace we manage

    volumes = await runtime.volumes()

    assert sorted(volumes, key=lambda v: v.id) == [
        Volume(id="uid-data", size_bytes=10 * GiB, name=f"{NS}/data"),
        Volume(id="uid-scratch", size_bytes=500_000_000, name=f"{NS}/scratch"),
    ]


async def test_a_refused_claim_listing_is_one_plain_line(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    declare_claims(kube)
    kube.k8s["get", kmock.resource("", "v1", "persistentvolumeclaims")] << kmock.KubernetesError(
        status=403, reason="Forbidden", message="persistentvolumeclaims is forbidden")
    with pytest.raises(RuntimeFailure, match=rf"^list persistent volume claims in {NS}: permission denied"):
        await runtime.volumes()


async def test_validate_checks_that_the_agent_may_list_claims(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    await runtime.provision({})
    assert (await runtime.validate())["permissions"][f"list persistent volume claims in {NS}"] is True
    kube.denied.add(("list", "persistentvolumeclaims"))
    report = await runtime.validate()
    assert report["ok"] is False
    assert report["permissions"][f"list persistent volume claims in {NS}"] is False
    assert f"missing permission: list persistent volume claims in {NS}" in report["problems"]


async def test_a_bare_host_has_no_volumes(tmp_path: Path) -> None:
    assert await LocalRuntime(tmp_path).volumes() == []
