"""The placement core, pure: which node a job gets, and why the others wait."""

from __future__ import annotations

from connectors.server.jobs.placement import (
    GPU_PRODUCT_LABEL,
    ClusterCap,
    GpuSlot,
    Node,
    OrgState,
    PassOptions,
    PendingJob,
    PlanCaps,
    PolicyRules,
    order_queue,
    place_org,
)

GiB = 1 << 30
NOW = 100_000.0
FREE = PlanCaps(plan_title="Free", cpu_millis=8000, memory_bytes=16 * GiB, gpus=0, upgrade_url="/orgs/acme/billing")


def cpu_node(name: str, cpus: int = 16, free: int | None = None, mem_gib: int = 64) -> Node:
    return Node(name=name, cpu_allocatable=cpus * 1000, memory_allocatable=mem_gib * GiB,
                cpu_free=(cpus if free is None else free) * 1000, memory_free=mem_gib * GiB)


def gpu_node(name: str, model: str = "A100-SXM4-80GB", gpus: int = 4, free: int | None = None,
             tainted: bool = True) -> Node:
    return Node(name=name, cpu_allocatable=64000, memory_allocatable=256 * GiB, cpu_free=64000,
                memory_free=256 * GiB, gpus=[GpuSlot("nvidia.com/gpu", model, gpus, gpus if free is None else free)],
                gpu_tainted=tainted, labels={GPU_PRODUCT_LABEL: model})


def cluster(name: str, *nodes: Node, region: str = "eu") -> ClusterCap:
    return ClusterCap(id=f"id-{name}", name=name, region=region, labels={}, nodes=list(nodes))


def job(jid: str, cpu: float = 1, mem_gib: float = 1, gpus: int = 0, gpu_type: str | None = None, *,
        priority: int = 50, age: float = 0, submitter: str = "ada", policy: PolicyRules | None = None,
        mode: str = "auto", cluster_ref: str | None = None) -> PendingJob:
    return PendingJob(id=jid, org_id="org", name=jid, submitter=submitter, priority=priority, queued_at=NOW - age,
                      cpu_millis=int(cpu * 1000), memory_bytes=int(mem_gib * GiB), gpus=gpus, gpu_type=gpu_type,
                      policy=policy, mode=mode, cluster=cluster_ref)


def org(*clusters: ClusterCap, caps: PlanCaps | None = None, used_cpu: int = 0) -> OrgState:
    return OrgState(slug="acme", clusters=list(clusters), caps=caps, used_cpu=used_cpu)


def test_a_gpu_job_lands_only_on_a_node_with_enough_free_gpus_of_its_type_with_toleration_and_selector() -> None:
    state = org(cluster("mixed", cpu_node("cpu-1"), gpu_node("t4-1", model="Tesla-T4"),
                        gpu_node("a100-busy", free=1), gpu_node("a100-free", free=4)))
    result = place_org(state, [job("train", cpu=4, gpus=2, gpu_type="A100")], NOW)
    [p] = result.placements
    assert p.node == "a100-free"
    assert p.node_selector == {GPU_PRODUCT_LABEL: "A100-SXM4-80GB"}
    assert ("nvidia.com/gpu", "NoSchedule") in p.tolerations
    assert p.assignment()["gpu_resource"] == "nvidia.com/gpu"


def test_a_gpu_job_waits_with_the_count_when_no_gpus_of_its_type_are_free() -> None:
    state = org(cluster("gpu", gpu_node("a100-1", free=0), gpu_node("a100-2", free=0)))
    result = place_org(state, [job("train", gpus=2, gpu_type="A100")], NOW)
    assert result.placements == []
    assert result.waiting["train"] == "needs 2 x A100; allowed clusters have 0 free"


def test_cpu_jobs_never_land_on_tainted_gpu_nodes_even_when_only_those_have_room() -> None:
    state = org(cluster("c", cpu_node("cpu-1", cpus=4), gpu_node("a100-1")))
    result = place_org(state, [job(f"j{i}", cpu=2) for i in range(3)], NOW)
    assert [p.node for p in result.placements] == ["cpu-1", "cpu-1"]
    assert "at most 0 vCPU" in result.waiting["j2"]


def test_cpu_jobs_prefer_plain_nodes_over_untainted_gpu_nodes() -> None:
    state = org(cluster("c", gpu_node("gpu-open", tainted=False), cpu_node("cpu-1")))
    [p] = place_org(state, [job("etl", cpu=2)], NOW).placements
    assert p.node == "cpu-1"


def test_free_plan_with_8_vcpu_in_use_the_next_job_waits_with_the_reason_and_upgrade_link() -> None:
    state = org(cluster("big", cpu_node("n1", cpus=64)), caps=FREE)
    result = place_org(state, [job(f"j{i}", cpu=2, age=10 - i) for i in range(5)], NOW)
    assert len(result.placements) == 4
    assert result.waiting["j4"] == "Free plan: 8 vCPU in use of 8 — upgrade at /orgs/acme/billing"


def test_free_plan_job_larger_than_the_cap_says_so_and_gpus_are_not_included() -> None:
    state = org(cluster("big", cpu_node("n1", cpus=64), gpu_node("g")), caps=FREE)
    result = place_org(state, [job("huge", cpu=10), job("gpu", gpus=1)], NOW)
    assert result.placements == []
    assert result.waiting["huge"] == "Free plan allows 8 vCPU at once; this job asks 10 vCPU — upgrade at " \
                                     "/orgs/acme/billing"
    assert result.waiting["gpu"] == "Free plan includes no GPUs — upgrade at /orgs/acme/billing"


def test_higher_priority_first_then_older_first() -> None:
    state = org(cluster("c", cpu_node("n1", cpus=2)))
    jobs = [job("old-low", priority=10, age=50), job("new-high", priority=90, age=1), job("old-high", priority=90,
                                                                                           age=30)]
    result = place_org(state, jobs, NOW, PassOptions(age_step_s=0))
    assert [p.job_id for p in result.placements] == ["old-high", "new-high"]
    assert "old-low" in result.waiting


def test_members_of_one_org_take_turns_within_a_priority() -> None:
    jobs = [job(f"ada-{i}", submitter="ada", age=100 - i) for i in range(3)] + \
           [job(f"bob-{i}", submitter="bob", age=10 - i) for i in range(3)]
    ordered = [j.id for j in order_queue(jobs, {}, NOW, PassOptions(age_step_s=0))]
    assert ordered == ["ada-0", "bob-0", "ada-1", "bob-1", "ada-2", "bob-2"]
    # with room for two, ada's flood does not take both slots
    state = org(cluster("c", cpu_node("n1", cpus=2)))
    assert [p.job_id for p in place_org(state, jobs, NOW, PassOptions(age_step_s=0)).placements] == ["ada-0", "bob-0"]


def test_a_lighter_current_user_goes_first_in_a_round() -> None:
    jobs = [job("ada-0", submitter="ada", age=100), job("bob-0", submitter="bob", age=5)]
    assert [j.id for j in order_queue(jobs, {"ada": 32000}, NOW, PassOptions(age_step_s=0))] == ["bob-0", "ada-0"]


def test_a_large_job_that_waited_long_reserves_a_node_so_small_jobs_stop_taking_it() -> None:
    opts = PassOptions(reserve_after_s=600, age_step_s=0)
    state = org(cluster("c", cpu_node("n1", cpus=16, free=4), cpu_node("n2", cpus=16, free=2)))
    small = [job(f"small-{i}", cpu=1, age=10) for i in range(3)]
    # not yet waited long: small jobs keep taking whatever frees up
    fresh = place_org(state, [job("big", cpu=16, age=60), *small], NOW, opts)
    assert len(fresh.placements) == 3 and "big" in fresh.waiting
    state = org(cluster("c", cpu_node("n1", cpus=16, free=4), cpu_node("n2", cpus=16, free=2)))
    starving = place_org(state, [job("big", cpu=16, age=3600), *small], NOW, opts)
    assert "reserved node n1" in starving.waiting["big"]
    assert [p.node for p in starving.placements] == ["n2", "n2"]  # n1 is held for big
    assert "reserved for an older job" in starving.waiting["small-2"]


def test_an_old_job_blocked_by_the_plan_cap_keeps_the_headroom_from_younger_jobs() -> None:
    state = org(cluster("c", cpu_node("n1", cpus=64)), caps=FREE, used_cpu=4000)
    result = place_org(state, [job("wide", cpu=6, age=3600), job("narrow", cpu=2, age=5)], NOW,
                       PassOptions(reserve_after_s=600, age_step_s=0))
    assert result.placements == []
    assert "the older job 'wide' gets the freed capacity first" in result.waiting["narrow"]


def test_aging_lifts_a_low_priority_job_over_time() -> None:
    jobs = [job("patient", priority=10, age=3600), job("eager", priority=50, age=1)]
    assert next(iter(order_queue(jobs, {}, NOW, PassOptions(age_step_s=60)))).id == "patient"


def test_policies_exclude_clusters_and_the_reason_names_the_policy() -> None:
    rules = PolicyRules(source="the policy for role 'member'", allowed_clusters=frozenset({"eu-cpu"}))
    state = org(cluster("us-gpu", cpu_node("u1")), cluster("eu-cpu", cpu_node("e1")))
    result = place_org(state, [job("a", policy=rules), job("b", policy=rules, mode="cluster", cluster_ref="us-gpu")],
                       NOW)
    assert [(p.job_id, p.cluster_id) for p in result.placements] == [("a", "id-eu-cpu")]
    assert result.waiting["b"] == ("the policy for role 'member' allows only clusters eu-cpu; no attached cluster "
                                   "there matches the job's placement")


def test_policy_gpu_ban_and_size_limits_apply_at_placement_too() -> None:
    rules = PolicyRules(source="the org policy", gpus_allowed=False, max_cpu_millis=4000)
    state = org(cluster("c", cpu_node("n1", cpus=64), gpu_node("g")))
    result = place_org(state, [job("gpu", gpus=1, policy=rules), job("wide", cpu=8, policy=rules)], NOW)
    assert result.placements == []
    assert result.waiting["gpu"] == "the org policy does not allow GPU jobs"
    assert result.waiting["wide"] == "the org policy allows at most 4 vCPU per job; it asks 8"


def test_no_cluster_and_unknown_placement_targets_are_explained() -> None:
    assert place_org(org(), [job("a")], NOW).waiting["a"] == "no attached cluster: connect one at /orgs/acme/clusters"
    result = place_org(org(cluster("c", cpu_node("n"))), [job("b", mode="cluster", cluster_ref="nope")], NOW)
    assert result.waiting["b"] == "no attached cluster named 'nope'"


def test_a_job_larger_than_any_node_says_how_large_the_largest_is() -> None:
    result = place_org(org(cluster("c", cpu_node("n", cpus=8))), [job("huge", cpu=32)], NOW)
    assert result.waiting["huge"] == "needs 32 vCPU and 1 GiB on one node; the largest allowed node has 8 vCPU and 64 GiB"


def test_one_pass_places_thousands_of_jobs_quickly() -> None:
    import time

    clusters = [cluster(f"c{i}", *(cpu_node(f"c{i}-n{k}", cpus=32) for k in range(4))) for i in range(100)]
    state = org(*clusters)
    jobs = [job(f"j{i}", cpu=1 + i % 4, submitter=f"u{i % 7}", age=i % 300) for i in range(5000)]
    started = time.perf_counter()
    result = place_org(state, jobs, NOW)
    assert time.perf_counter() - started < 2.0
    assert len(result.placements) + len(result.waiting) == 5000
    placed = {p.job_id for p in result.placements}
    assert sum(j.cpu_millis for j in jobs if j.id in placed) <= 100 * 4 * 32_000  # never more than there is
    assert all(n.cpu_free >= 0 for c in state.clusters for n in c.nodes)
