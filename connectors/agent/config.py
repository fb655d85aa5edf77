"""The agent's settings: one frozen object built at the entry point (flags, then environment).

Where the credential lives after registration:

* bare host: ``<state_dir>/credential.json``, mode 0600, in a 0700 folder (default
  ``~/.metacloud-agent``; ``/var/lib/metacloud-agent`` when run as a system service).
* Kubernetes: pods lose their files on restart, so the install manifest pre-creates an empty Secret
  ``metacloud-agent-credential`` which the agent patches (``credential_secret``; the agent's Role may
  get and patch only that one Secret). Without it, mount a persistent volume at ``state_dir``.

The state folder also holds the usage spool (``usage-spool.sqlite3``: records not yet uploaded and
each job's metering watermark). On Kubernetes it is an emptyDir, so a new pod (an upgrade, a drained
node) starts with an empty spool, and still loses no usage and counts none twice: the agent reads
back from the cluster the Jobs it ran (``runtime.jobs()``, their allocation from the Job itself) and
meters each again from its start (``UsageMeter.adopt``). Record ids are deterministic and windows
aligned to the clock, so the windows the old pod uploaded come out with the same ids and the gateway
drops them as duplicates, while the ones lost with its spool are made again. No persistent volume
is needed for usage, and none for the credential either (the Secret).

The registration token is used once; after a restart the agent finds the stored credential and does
not register again. Started with a different token (a new install command), it registers anew.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from connectors.protocol import JOB_REPORT_INTERVAL_S

__all__ = ["AgentConfig", "ConfigError", "default_state_dir"]

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class ConfigError(ValueError):
    """A setting is unusable; the message says which and how to fix it."""


def default_state_dir() -> Path:
    if os.environ.get("METACLOUD_STATE_DIR"):
        return Path(os.environ["METACLOUD_STATE_DIR"])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/metacloud-agent")
    return Path.home() / ".metacloud-agent"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    server_url: str
    token: str | None = None  # registration token; unused once a credential is stored
    state_dir: Path = Path(".metacloud-agent")
    runtime: str = "local"  # "kubernetes" | "local"
    ca_file: Path | None = None  # extra CA bundle to trust (private CA, TLS-inspecting proxy)
    insecure: bool = False  # skip TLS verification: tests and first-time debugging only
    heartbeat_interval_s: float | None = None  # overrides the server's interval
    command_wait_s: int | None = None  # long-poll wait; overrides the server's value
    credential_secret: str | None = None  # "namespace/name" of the Secret holding the credential (Kubernetes)
    jobs_namespace: str = "metacloud-jobs"
    request_timeout_s: float = 30.0
    backoff_cap_s: float = 60.0
    # Push job status to the gateway (``connectors.agent.job_reports``); off, the gateway asks with job_status.
    job_reports: bool = True
    report_interval_s: float = JOB_REPORT_INTERVAL_S

    def __post_init__(self) -> None:
        url = self.server_url.strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"--server must be the gateway's URL, like https://metacloud.example.com (got {self.server_url!r})")
        if parts.path not in ("", "/"):
            raise ConfigError(f"--server takes the gateway's base URL without a path (got {self.server_url!r})")
        object.__setattr__(self, "server_url", url)
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ConfigError(f"--ca-file {self.ca_file} does not exist or is not a file")
        if self.report_interval_s <= 0:
            raise ConfigError(f"the job report interval must be a positive number of seconds (got {self.report_interval_s})")
        if self.credential_secret is not None and "/" not in self.credential_secret:
            raise ConfigError("credential_secret must be NAMESPACE/NAME")

    @property
    def plain_http_remote(self) -> bool:
        """True when credentials would cross a network unencrypted (allowed, but warned about)."""
        parts = urlsplit(self.server_url)
        return parts.scheme == "http" and (parts.hostname or "") not in _LOOPBACK
