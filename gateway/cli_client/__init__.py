"""The ``metacloud`` client commands (login, clusters, jobs, usage), used by people and scripts.

``add_commands(subparsers)`` registers them on the ``metacloud`` parser (``gateway/cli.py``);
``run_parsed(args, ctx)`` runs one. ``run(argv, ctx)`` does both, for tests:

    ctx = Context(out=io.StringIO(), transport=httpx.ASGITransport(app=app), config_path=tmp / "c.json")
    assert await run(["jobs", "ls", "--json"], ctx) == 0
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence

from gateway.cli_client import commands as c
from gateway.cli_client.context import Context
from gateway.cli_client.http import ApiError

__all__ = ["Context", "add_commands", "is_client_command", "main_client", "run", "run_parsed"]

Handler = Callable[[Context, argparse.Namespace], Awaitable[int]]
STATES = ("queued", "placed", "dispatched", "running", "succeeded", "failed", "cancelled", "timed_out", "lost")


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--org", default=None, help="another org than the one you logged in to")
    return p


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common()

    def leaf(parent: argparse._SubParsersAction[argparse.ArgumentParser], name: str, handler: Handler,
             help_: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_, parents=[common])
        p.set_defaults(client=handler)
        return p

    p = sub.add_parser("login", help="store the server, org and an API key (checked with a call)")
    p.add_argument("--server", required=True, help="e.g. https://metacloud.example.com")
    p.add_argument("--org", required=True, help="the org's slug")
    p.add_argument("--api-key-stdin", action="store_true", help="read the API key from stdin instead of a prompt")
    p.add_argument("--json", action="store_true")
    p.set_defaults(client=c.login)

    clusters = sub.add_parser("clusters", help="the org's clusters").add_subparsers(dest="what", required=True)
    leaf(clusters, "ls", c.clusters_ls, "list clusters with state, capacity and heartbeat")

    jobs = sub.add_parser("jobs", help="submit and follow jobs").add_subparsers(dest="what", required=True)
    p = leaf(jobs, "submit", c.jobs_submit, "submit a job")
    p.add_argument("name")
    p.add_argument("--image", help="container image (Kubernetes clusters)")
    p.add_argument("--command", help="the command line, e.g. 'python train.py' (split like a shell)")
    p.add_argument("--arg", action="append", help="one argument (repeatable; --arg=--flag for a leading '-')")
    p.add_argument("--env", action="append", metavar="K=V", help="environment variable (repeatable)")
    p.add_argument("--cpu", type=float, default=1.0, help="vCPU (default 1)")
    p.add_argument("--memory", default="1Gi", help="e.g. 512Mi, 4Gi (default 1Gi)")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--gpu-type", default=None, help="e.g. A100")
    p.add_argument("--cluster", default=None, help="run on this cluster (name or id)")
    p.add_argument("--region", default=None, help="run on a cluster in this region")
    p.add_argument("--label", action="append", metavar="K=V", help="run on a cluster with this label (repeatable)")
    p.add_argument("--priority", type=int, default=50, help="0-100 (default 50)")
    p.add_argument("--max-runtime", type=int, default=None, metavar="SECONDS")
    p.add_argument("--wait", action="store_true", help="show progress until the job ends; exit with its result")
    p = leaf(jobs, "ls", c.jobs_ls, "list jobs")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--cluster", default=None)
    p.add_argument("--mine", action="store_true", help="only jobs you submitted")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--before", default=None, help="page on: the id from the previous page's 'More' line")
    p = leaf(jobs, "show", c.jobs_show, "a job with its status timeline")
    p.add_argument("id")
    p = leaf(jobs, "logs", c.jobs_logs, "a job's log (tail, or follow with -f)")
    p.add_argument("id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    p.add_argument("--tail", type=int, default=200)
    p = leaf(jobs, "cancel", c.jobs_cancel, "cancel a job")
    p.add_argument("id")

    p = leaf(sub, "usage", c.usage, "the org's usage: this month, or --from/--to")
    p.add_argument("--from", dest="from_", default=None, metavar="YYYY-MM-DD", help="first day (UTC)")
    p.add_argument("--to", default=None, metavar="YYYY-MM-DD", help="last day (UTC, included)")


def is_client_command(args: argparse.Namespace) -> bool:
    return callable(getattr(args, "client", None))


async def run_parsed(args: argparse.Namespace, ctx: Context) -> int:
    handler: Handler = args.client
    try:
        return await handler(ctx, args)
    except ApiError as exc:
        print(f"error: {exc.message}", file=ctx.err)
        return 1
    except c.UsageError as exc:
        print(f"error: {exc}", file=ctx.err)
        return 2


async def run(argv: Sequence[str], ctx: Context) -> int:
    parser = argparse.ArgumentParser(prog="metacloud")
    add_commands(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse's usage errors (2) and --help (0)
        return exc.code if isinstance(exc.code, int) else 2
    return await run_parsed(args, ctx)


def main_client(args: argparse.Namespace, ctx: Context | None = None) -> int:
    """The entry from ``gateway/cli.py``: run under asyncio; Ctrl-C exits 130 without a traceback."""
    try:
        return asyncio.run(run_parsed(args, ctx or Context()))
    except KeyboardInterrupt:
        return 130
