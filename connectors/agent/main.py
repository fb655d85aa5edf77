"""``metacloud-agent``: entry point of the cluster agent.

Flags win over environment variables (the Kubernetes Deployment uses the variables)::

    --server        METACLOUD_SERVER             the gateway's URL
    --token         METACLOUD_TOKEN              registration token (used once)
    --runtime       METACLOUD_RUNTIME            kubernetes | local (default: kubernetes inside a pod)
    --state-dir     METACLOUD_STATE_DIR          where the credential file and local job logs live
    --ca-file       METACLOUD_CA_FILE            extra CA bundle to trust for the gateway
    --insecure      METACLOUD_INSECURE=1         skip TLS verification (debugging only)
    --credential-secret  METACLOUD_CREDENTIAL_SECRET  [NAMESPACE/]NAME of the Secret that keeps the credential
    --jobs-namespace     METACLOUD_JOBS_NAMESPACE     namespace for jobs (default metacloud-jobs)
    --kubeconfig    KUBECONFIG                   when not running in a pod
    --usage-window  METACLOUD_USAGE_WINDOW_S     seconds per usage record (default 60; must divide an hour)
    --report-interval  METACLOUD_REPORT_INTERVAL_S  seconds between looks at the jobs for job reports (default 2)
    --no-job-reports   METACLOUD_NO_JOB_REPORTS=1   do not push job status (the gateway asks with commands)

Exit codes: 0 stopped by SIGINT/SIGTERM, 2 bad settings or registration token, 3 credential revoked
(the cluster was detached), 4 agent too old for the gateway, 1 unexpected error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.agent.client import EXIT_BAD_TOKEN
from connectors.agent.config import AgentConfig, ConfigError, default_state_dir
from connectors.agent.credentials import CredentialStore, FileCredentialStore, SecretCredentialStore
from connectors.agent.loop import Agent
from connectors.agent.usage import UsageSettings
from connectors.protocol import AGENT_VERSION, JOB_REPORT_INTERVAL_S, PROTOCOL_VERSION
from connectors.runtimes import RUNTIME_KINDS, RuntimeFailure, make_runtime

__all__ = ["build_parser", "main"]

log = logging.getLogger("metacloud.agent")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    in_pod = bool(env("KUBERNETES_SERVICE_HOST"))
    parser = argparse.ArgumentParser(
        prog="metacloud-agent",
        description="Connects a cluster or this host to Metacloud. Outbound HTTPS only.",
    )
    parser.add_argument("--version", action="version", version=f"metacloud-agent {AGENT_VERSION} (protocol {PROTOCOL_VERSION})")
    parser.add_argument("--server", default=env("METACLOUD_SERVER"), help="the gateway's URL, e.g. https://metacloud.example.com")
    parser.add_argument("--token", default=env("METACLOUD_TOKEN"), help="the registration token shown by the connect wizard")
    parser.add_argument("--runtime", choices=RUNTIME_KINDS,
                        default=env("METACLOUD_RUNTIME") or ("kubernetes" if in_pod else "local"),
                        help="where jobs run (default: kubernetes inside a pod, else local)")
    parser.add_argument("--state-dir", type=Path, default=None, help="credential file and local job logs")
    parser.add_argument("--ca-file", type=Path, default=env("METACLOUD_CA_FILE") or None,
                        help="CA bundle that signs the gateway's certificate (private CA, TLS-inspecting proxy)")
    parser.add_argument("--insecure", action="store_true", default=_env_flag("METACLOUD_INSECURE"),
                        help="do not verify the gateway's TLS certificate (debugging only)")
    parser.add_argument("--credential-secret", default=env("METACLOUD_CREDENTIAL_SECRET") or None,
                        help="[NAMESPACE/]NAME of a pre-created Secret that keeps the credential (Kubernetes)")
    parser.add_argument("--jobs-namespace", default=env("METACLOUD_JOBS_NAMESPACE") or "metacloud-jobs")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig to use outside a pod (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--heartbeat-interval", type=float, default=None, help="seconds; overrides the gateway's value")
    parser.add_argument("--usage-window", type=int, default=int(env("METACLOUD_USAGE_WINDOW_S") or 60),
                        help="seconds per usage record (must divide an hour; default 60)")
    parser.add_argument("--report-interval", type=float,
                        default=float(env("METACLOUD_REPORT_INTERVAL_S") or JOB_REPORT_INTERVAL_S),
                        help=f"seconds between looks at the jobs for job reports (default {JOB_REPORT_INTERVAL_S:g})")
    parser.add_argument("--no-job-reports", action="store_true", default=_env_flag("METACLOUD_NO_JOB_REPORTS"),
                        help="do not push job status; the gateway asks for it with job_status commands")
    parser.add_argument("--log-level", default=env("METACLOUD_LOG_LEVEL") or "INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def _secret_ref(value: str) -> tuple[str, str]:
    if "/" in value:
        namespace, name = value.split("/", 1)
        return namespace, name
    namespace = os.environ.get("POD_NAMESPACE") or "metacloud-agent"
    return namespace, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s metacloud-agent: %(message)s")
    # httpx logs every request at INFO: a line per heartbeat would bury the one line per problem.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not args.server:
        parser.error("--server is required (copy the command from the cluster connect wizard)")
    if args.usage_window <= 0 or 3600 % args.usage_window:
        parser.error("--usage-window must divide an hour (e.g. 10, 30, 60, 300 seconds)")
    secret = _secret_ref(args.credential_secret) if args.credential_secret else None
    try:
        config = AgentConfig(
            server_url=args.server,
            token=args.token,
            state_dir=args.state_dir or default_state_dir(),
            runtime=args.runtime,
            ca_file=args.ca_file,
            insecure=args.insecure,
            heartbeat_interval_s=args.heartbeat_interval,
            credential_secret=f"{secret[0]}/{secret[1]}" if secret else None,
            jobs_namespace=args.jobs_namespace,
            job_reports=not args.no_job_reports,
            report_interval_s=args.report_interval,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    opts: dict[str, Any] = {}
    if args.runtime == "kubernetes":
        opts = {"namespace": config.jobs_namespace, "kubeconfig": args.kubeconfig}
    else:
        opts = {"state_dir": config.state_dir}
    return asyncio.run(_run(config, opts, UsageSettings(window_s=args.usage_window)))


async def _run(config: AgentConfig, runtime_opts: dict[str, Any], usage: UsageSettings | None = None) -> int:
    try:
        runtime = make_runtime(config.runtime, **runtime_opts)
    except RuntimeFailure as exc:
        log.error("%s", exc)
        return EXIT_BAD_TOKEN
    store: CredentialStore
    if config.credential_secret:
        namespace, name = config.credential_secret.split("/", 1)
        api = getattr(runtime, "api", None)
        if api is None:
            from connectors.runtimes.kubernetes import kube_api_client

            api = kube_api_client()
        store = SecretCredentialStore(namespace, name, api)
    else:
        store = FileCredentialStore(config.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await Agent(config, runtime, store=store, usage=usage).run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        close = getattr(runtime, "aclose", None)
        if close is not None:
            await close()


if __name__ == "__main__":
    sys.exit(main())
