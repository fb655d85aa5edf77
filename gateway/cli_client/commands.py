"""The client commands: ``login``, ``clusters ls``, ``jobs submit|ls|show|logs|cancel``, ``usage``.

Each command is ``async def cmd(ctx, args) -> exit code``; ``ctx`` carries the streams, the credentials
file and (in tests) the HTTP transport, so tests run the real commands against the app in-process.
Exit codes: 0 done, 1 the server refused or is unreachable (one line ``error: <detail>``), 2 bad usage,
130 interrupted (``gateway.cli_client.run`` turns Ctrl-C into it). ``jobs submit --wait`` exits with the job's own exit code when it failed with one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from gateway.cli_client import config
from gateway.cli_client.context import Context
from gateway.cli_client.http import Api, ApiError, detail_of, sse_events
from gateway.cli_client.output import age, cores, gib, print_json, table

__all__ = ["clusters_ls", "jobs_cancel", "jobs_logs", "jobs_ls", "jobs_show", "jobs_submit", "login", "usage"]

FINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
PENDING = frozenset({"queued", "placed"})


class UsageError(Exception):
    """A mistake on the command line, found after argparse (exit code 2)."""


def _api(ctx: Context, args: argparse.Namespace) -> Api:
    creds = config.load(ctx.config_path, ctx.env)
    if creds is None:
        raise ApiError("not logged in: run metacloud login --server URL --org SLUG")
    if getattr(args, "org", None):
        creds = config.Credentials(server=creds.server, org=args.org, api_key=creds.api_key)
    return Api(creds, transport=ctx.transport)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


# --- login ---------------------------------------------------------------------------------------------


async def login(ctx: Context, args: argparse.Namespace) -> int:
    """Check the key with a call to the org, then store server, org and key (0600)."""
    if args.api_key_stdin:
        key = ctx.stdin.readline().strip()
    else:
        key = ctx.prompt("API key (input hidden): ").strip()
    if not key:
        raise UsageError("no API key given")
    server = args.server.strip().rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise UsageError("--server must be a URL such as https://metacloud.example.com")
    creds = config.Credentials(server=server, org=args.org.strip(), api_key=key)
    async with Api(creds, transport=ctx.transport) as api:
        org = await api.get_json("")
    config.save(ctx.config_path, creds)
    if args.json:
        print_json(ctx.out, {"server": server, "org": org, "credentials": str(ctx.config_path)})
    else:
        print(f"Logged in to {server}: {org.get('name', creds.org)} ({creds.org}), role {org.get('role') or '-'}. "
              f"Saved to {ctx.config_path}.", file=ctx.out)
    return 0


# --- clusters ------------------------------------------------------------------------------------------


def _used_of(cap: Mapping[str, Any] | None, used: str, total: str, fmt: Any) -> str:
    if not cap:
        return "-"
    return f"{fmt(cap[used])}/{fmt(cap[total])}"


async def clusters_ls(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        items = await api.get_json("/clusters")
    if args.json:
        print_json(ctx.out, items)
        return 0
    rows = []
    for c in items:
        cap = c.get("capacity")
        rows.append([
            c["name"], c["state"], c.get("provider") or "-", c.get("region") or "-",
            _used_of(cap, "cpu_allocated_millis", "cpu_total_millis", lambda m: cores(m / 1000)),
            _used_of(cap, "memory_allocated_bytes", "memory_total_bytes", gib),
            _used_of(cap, "gpu_allocated", "gpu_total", str),
            age(c.get("last_heartbeat_at")),
        ])
    table(ctx.out, ["NAME", "STATE", "PROVIDER", "REGION", "CPU USED", "MEMORY USED", "GPUS USED", "HEARTBEAT"],
          rows, empty="No clusters yet: connect one at " + api.creds.server + f"/orgs/{api.creds.org}/clusters/new")
    return 0


# --- jobs ----------------------------------------------------------------------------------------------


def _resources(job: Mapping[str, Any]) -> tuple[str, str, str]:
    r = job.get("resources") or {}
    gpus = int(r.get("gpus") or 0)
    gpu = f"{gpus} x {r['gpu_type']}" if gpus and r.get("gpu_type") else str(gpus)
    return cores(r.get("cpu")), gib(r.get("memory_bytes")), gpu


def _job_row(job: Mapping[str, Any]) -> list[str]:
    cpu, mem, gpu = _resources(job)
    cluster = (job.get("cluster") or {}).get("name") or "-"
    reason = job.get("reason") or ""
    return [str(job["id"]), job["name"], job["state"], cluster, cpu, mem, gpu, age(job.get("created_at")),
            reason if len(reason) <= 70 else reason[:69] + "…"]


def _submit_body(args: argparse.Namespace) -> dict[str, Any]:
    if not args.image and not args.command:
        raise UsageError("give --image IMAGE (Kubernetes) or --command 'CMD' (a bare host), or both")
    chosen = [f for f, v in (("--cluster", args.cluster), ("--region", args.region), ("--label", args.label)) if v]
    if len(chosen) > 1:
        raise UsageError(f"choose one placement: {' or '.join(chosen)}")
    mode = "cluster" if args.cluster else "region" if args.region else "labels" if args.label else "auto"
    return {
        "name": args.name,
        "image": args.image,
        "command": shlex.split(args.command) if args.command else [],
        "args": list(args.arg or []),
        "env": _pairs(args.env, "--env"),
        "resources": {"cpu": args.cpu, "memory": args.memory, "gpus": args.gpus, "gpu_type": args.gpu_type},
        "placement": {"mode": mode, "cluster": args.cluster, "region": args.region,
                      "labels": _pairs(args.label, "--label")},
        "priority": args.priority,
        "max_runtime_s": args.max_runtime,
    }


def _progress(job: Mapping[str, Any]) -> str:
    when = datetime.now(UTC).strftime("%H:%M:%S")
    line = f"[{when}] {job['state']}"
    cluster = (job.get("cluster") or {}).get("name")
    if cluster and job["state"] not in PENDING:
        line += f" on {cluster}"
    if job.get("reason"):
        line += f": {job['reason']}"
    return line


def _finished(job: Mapping[str, Any]) -> bool:
    # "lost" may be re-queued by the job's policy; it is over only once it has a finish time
    return job["state"] in FINAL and (job["state"] != "lost" or bool(job.get("finished_at")))


def _exit_code_of(job: Mapping[str, Any]) -> int:
    if job["state"] == "succeeded":
        return 0
    code = job.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


async def jobs_submit(ctx: Context, args: argparse.Namespace) -> int:
    body = _submit_body(args)
    async with _api(ctx, args) as api:
        job = await api.post_json("/jobs", body)
        progress = ctx.err if args.json else ctx.out
        if not args.wait:
            if args.json:
                print_json(ctx.out, job)
            else:
                print(f"Submitted {job['name']} as {job['id']}: {job['state']}"
                      + (f" ({job['reason']})" if job.get("reason") else ""), file=ctx.out)
            return 0
        print(f"Submitted {job['name']} as {job['id']}; waiting (Ctrl-C stops waiting, not the job)",
              file=progress)
        print(_progress(job), file=progress)
        seen = (job["state"], job.get("reason"))
        try:
            while not _finished(job):
                await ctx.sleep(ctx.poll_interval)
                job = await api.get_json(f"/jobs/{job['id']}")
                if (job["state"], job.get("reason")) != seen:
                    seen = (job["state"], job.get("reason"))
                    print(_progress(job), file=progress)
        except asyncio.CancelledError:  # Ctrl-C under asyncio.run
            print(f"Stopped waiting; the job goes on. Follow it: metacloud jobs logs {job['id']} -f", file=ctx.err)
            raise
    if args.json:
        print_json(ctx.out, job)
    else:
        code = job.get("exit_code")
        print(f"{job['name']} {job['state']}" + (f" with exit code {code}" if code is not None else "")
              + f". Logs: metacloud jobs logs {job['id']}", file=ctx.out)
    return _exit_code_of(job)


async def jobs_ls(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        page = await api.get_json("/jobs", state=args.state, cluster=args.cluster,
                                  mine="true" if args.mine else None, limit=args.limit, before=args.before)
    if args.json:
        print_json(ctx.out, page)
        return 0
    table(ctx.out, ["ID", "NAME", "STATE", "CLUSTER", "CPU", "MEMORY", "GPUS", "AGE", "REASON"],
          [_job_row(j) for j in page["items"]], empty="No jobs" + (f" in state {args.state}." if args.state else "."))
    if page.get("next"):
        print(f"More: metacloud jobs ls --before {page['next']}", file=ctx.out)
    return 0


async def jobs_show(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        job = await api.get_json(f"/jobs/{args.id}")
    if args.json:
        print_json(ctx.out, job)
        return 0
    cpu, mem, gpu = _resources(job)
    facts = [("Name", job["name"]), ("State", job["state"]), ("Reason", job.get("reason") or "-"),
             ("Cluster", (job.get("cluster") or {}).get("name") or "-"), ("Resources", f"{cpu} vCPU, {mem}, {gpu} GPU"),
             ("Image", job.get("image") or "-"), ("Command", shlex.join(job.get("command") or []) or "-"),
             ("Submitted by", (job.get("submitted_by") or {}).get("email") or "-"),
             ("Exit code", "-" if job.get("exit_code") is None else str(job["exit_code"]))]
    for label, value in facts:
        print(f"{label + ':':14}{value}", file=ctx.out)
    for e in job.get("events") or []:
        print(f"  {e['at']}  {e['state']}" + (f": {e['reason']}" if e.get("reason") else ""), file=ctx.out)
    return 0


async def jobs_logs(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        if not args.follow:
            logs = await api.get_json(f"/jobs/{args.id}/logs", tail=args.tail)
            if args.json:
                print_json(ctx.out, logs)
            else:
                for line in logs["lines"]:
                    print(line, file=ctx.out)
            return 0
        lines = api.stream_lines(f"/jobs/{args.id}/logs", {"tail": args.tail, "follow": "true"})
        async for event, data in sse_events(lines):
            if event == "end":
                break
            if event == "message":
                print(json.dumps({"line": data}) if args.json else data, file=ctx.out, flush=True)
    return 0


async def jobs_cancel(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        job = await api.post_json(f"/jobs/{args.id}/cancel")
    if args.json:
        print_json(ctx.out, job)
    else:
        print(f"{job['name']} ({job['id']}): {job['state']}" + (f", {job['reason']}" if job.get("reason") else ""),
              file=ctx.out)
    return 0


# --- usage ---------------------------------------------------------------------------------------------


async def usage(ctx: Context, args: argparse.Namespace) -> int:
    async with _api(ctx, args) as api:
        params = {k: v for k, v in (("from", args.from_), ("to", args.to)) if v}
        resp = await api.request("GET", "/usage", params=params or None)
        if resp.status_code == 404:
            await api.get_json("")  # the org itself answers: so it is the usage API that is missing
            print("usage is not available on this server yet", file=ctx.err)
            return 1
        if resp.status_code >= 400:
            raise ApiError(detail_of(resp), status=resp.status_code)
        body = resp.json()
    if args.json:
        print_json(ctx.out, body)
        return 0
    try:
        _print_usage(ctx, body)
    except (KeyError, TypeError, AttributeError):  # a shape this CLI does not know: show it readably
        _print_generic(ctx, body)
    return 0


def _qty(q: Mapping[str, Any] | None) -> str:
    if not q:
        return "-"
    number = str(q["quantity"])
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return f"{number} {q['unit']}"


def _print_usage(ctx: Context, body: Mapping[str, Any]) -> None:
    period = body["period"]
    print(f"Usage of {body['org']} for {period['label']} ({period['start'][:10]} to {period['end'][:10]}, "
          f"end excluded)", file=ctx.out)
    free = body.get("free_allowance") or {}
    rows = []
    for key, total in sorted(body["totals"].items()):
        allowance = free.get(key)
        rows.append([key, _qty(total), _qty(allowance["covered"]) if allowance else "-",
                     _qty(allowance["billable"]) if allowance else _qty(total)])
    table(ctx.out, ["RESOURCE", "USED", "FREE", "BILLABLE"], rows, empty="No usage in this period.")
    keys = sorted(body["totals"])
    if body.get("by_cluster") and keys:
        print("", file=ctx.out)
        table(ctx.out, ["CLUSTER", *(k.upper() for k in keys)],
              [[c["name"], *(_qty(c["usage"].get(k)) for k in keys)] for c in body["by_cluster"]])
    print("", file=ctx.out)
    cents = int(body["cost_to_date_cents"])
    if body.get("priced", True):
        print(f"Cost to date: {cents // 100}.{cents % 100:02d} {body.get('currency', 'USD').upper()}", file=ctx.out)
    else:
        print("Cost to date: not priced (no rate card covers this period)", file=ctx.out)


def _print_generic(ctx: Context, body: Any) -> None:
    """Usage arrives with the metering work; until its shape settles, show any JSON readably."""
    items = body.get("items") if isinstance(body, dict) else body
    if isinstance(items, list) and items and all(isinstance(i, dict) for i in items):
        keys = list(items[0].keys())
        table(ctx.out, [k.upper() for k in keys], [[_cell(i.get(k)) for k in keys] for i in items])
        rest = {k: v for k, v in body.items() if k != "items"} if isinstance(body, dict) else {}
    else:
        rest = body if isinstance(body, dict) else {"usage": body}
    for key, value in rest.items():
        print(f"{key}: {_cell(value)}", file=ctx.out)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return "-" if value is None else str(value)
