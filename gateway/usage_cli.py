"""``metacloud usage-admin``: operator tasks of metering, run against the database.

* ``rebuild-rollups [--org SLUG] [--from DATE] [--to DATE] [--check]``: recompute the hourly rollups from
  raw records (``--check`` only compares and exits 1 on a difference).
* ``maintain``: create this and the next months' raw partitions and drop those past
  ``USAGE_RAW_RETENTION_DAYS`` (rollups are kept). Safe to run often (a schedule or cron).

(``metacloud usage`` is the client command that shows an org's usage over HTTP.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, date, datetime, time, timedelta

from tenants.settings import Settings

__all__ = ["add_commands"]


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("use a date like 2026-11-01") from exc


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("usage-admin", help="metering maintenance: rebuild rollups, partitions and retention")
    what = admin.add_subparsers(dest="what", required=True)
    p = what.add_parser("rebuild-rollups", help="recompute hourly usage rollups from raw records")
    p.add_argument("--org", default=None, help="only this org (slug); default every org")
    p.add_argument("--from", dest="from_", type=_day, default=None, help="first day (UTC); default the oldest kept")
    p.add_argument("--to", type=_day, default=None, help="last day (UTC, inclusive); default no end")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when rollups differ")
    p.set_defaults(func=_run)
    p = what.add_parser("maintain", help="create upcoming raw partitions, drop those past retention")
    p.set_defaults(func=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.database_url:
        print("metacloud: set DATABASE_URL (the dev stack prints it) to reach the database", file=sys.stderr)
        return 2
    return asyncio.run(_main(settings, args))


async def _main(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from billing.usage.partitions import maintain
    from billing.usage.rollups import compare_rollups, rebuild_rollups
    from tenants.db import create_app_engine, create_sessionmaker, unscoped_session
    from tenants.models import Org

    engine = create_app_engine(settings)
    sessions = create_sessionmaker(engine)
    try:
        if args.what == "maintain":
            async with unscoped_session(sessions, reason="usage-admin maintain: partitions of every org") as s:
                created, dropped = await maintain(s, retention_days=settings.usage_raw_retention_days)
            print(f"partitions created: {', '.join(created) or 'none'}; dropped: {', '.join(dropped) or 'none'}")
            return 0
        start = datetime.combine(args.from_, time(0), tzinfo=UTC) if args.from_ else None
        end = datetime.combine(args.to + timedelta(days=1), time(0), tzinfo=UTC) if args.to else None
        async with unscoped_session(sessions, reason="usage-admin rebuild-rollups crosses orgs") as s:
            org_id = None
            if args.org:
                org_id = (await s.execute(select(Org.id).where(Org.slug == args.org))).scalar_one_or_none()
                if org_id is None:
                    print(f"metacloud: no org {args.org!r}", file=sys.stderr)
                    return 2
            if args.check:
                diff = await compare_rollups(s, org_id=org_id, start=start, end=end)
                for m in diff[:20]:
                    print(f"{m.org_id} {m.hour:%Y-%m-%d %H:00} {m.cluster_id} {m.resource} {m.gpu_type or '-'}: "
                          f"stored {m.stored}, raw {m.recomputed}")
                print("rollups match the raw records" if not diff else f"{len(diff)} rollup rows differ")
                return 1 if diff else 0
            rows = await rebuild_rollups(s, org_id=org_id, start=start, end=end)
        print(f"rollups rebuilt: {rows} rows")
        return 0
    finally:
        await engine.dispose()
