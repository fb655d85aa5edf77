"""``metacloud``: the dev stack, the gateway, the worker, migrations and admin tasks; and the client
commands (login, clusters, jobs, usage) in ``gateway.cli_client``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from gateway.billing_cli import add_billing_commands
from gateway.cli_client import add_commands as add_client_commands
from gateway.cli_client import is_client_command, main_client
from gateway.usage_cli import add_commands as add_usage_admin_commands
from tenants.settings import Settings

__all__ = ["main"]


def _cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.observability import configure_logging

    configure_logging(settings)
    app = create_app(settings)
    uvicorn.run(app, host=args.host or settings.host, port=args.port or settings.port,
                log_config=None, access_log=False, proxy_headers=True)
    return 0


def _cmd_worker(settings: Settings, _: argparse.Namespace) -> int:
    from gateway.observability import configure_logging, configure_tracing
    from workflows.worker import run_worker

    configure_logging(settings)
    configure_tracing(settings)
    asyncio.run(run_worker(settings))
    return 0


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from infra.migrate import upgrade

    upgrade(settings, args.revision)
    print(f"database migrated to {args.revision}")
    return 0


def _cmd_dev(settings: Settings, _: argparse.Namespace) -> int:
    from infra.dev.stack import run_dev_stack

    return run_dev_stack(settings)


def _cmd_create_operator(settings: Settings, args: argparse.Namespace) -> int:
    """Operators exist only through this command: whoever runs it already holds the database."""
    import getpass

    from sqlalchemy import select

    from tenants.db import create_app_engine, create_sessionmaker, unscoped_session
    from tenants.errors import InvalidInput
    from tenants.models import User
    from tenants.operators import create_operator

    async def run() -> int:
        engine = create_app_engine(settings)
        sessions = create_sessionmaker(engine)
        try:
            async with unscoped_session(sessions, reason="create-operator looks the user up") as s:
                exists = (await s.execute(select(User.id).where(User.email == args.email.strip().lower()))).first()
            password: str | None = None
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            elif exists is None:
                password = getpass.getpass("Password for the new operator: ")
                if getpass.getpass("Again: ") != password:
                    print("metacloud: the passwords differ", file=sys.stderr)
                    return 2
            async with unscoped_session(sessions, reason="create-operator writes the operator") as s:
                made = await create_operator(s, email=args.email, password=password)
        except InvalidInput as exc:
            print(f"metacloud: {exc.message}", file=sys.stderr)
            return 2
        finally:
            await engine.dispose()
        print(f"operator {made.email} created" if made.created else f"{made.email} promoted to operator")
        return 0

    if not settings.database_url:
        print("metacloud: set DATABASE_URL (the dev stack prints it) to reach the database", file=sys.stderr)
        return 2
    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metacloud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dev", help="run the whole stack on this machine with embedded defaults")
    p.set_defaults(func=_cmd_dev)
    p = sub.add_parser("gateway", help="serve the HTTP gateway")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.set_defaults(func=_cmd_gateway)
    p = sub.add_parser("worker", help="run a Temporal worker")
    p.set_defaults(func=_cmd_worker)
    p = sub.add_parser("migrate", help="apply database migrations (as the database owner)")
    p.add_argument("revision", nargs="?", default="heads")
    p.set_defaults(func=_cmd_migrate)
    p = sub.add_parser("create-operator", help="create a platform operator, or promote an existing user")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    p.set_defaults(func=_cmd_create_operator)
    add_client_commands(sub)  # login, clusters, jobs, usage: talk to a gateway over HTTP
    add_billing_commands(sub)  # billing close / sync-events / set-plan: need the database and Temporal
    add_usage_admin_commands(sub)  # usage-admin rebuild-rollups / maintain: need the database
    args = parser.parse_args(argv)
    if is_client_command(args):  # they need no server settings, only the stored login
        return main_client(args)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"metacloud: {exc}", file=sys.stderr)
        return 2
    rc: int = args.func(settings, args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
