"""``metacloud-agent``: entry point of the cluster agent."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from connectors.protocol import AGENT_VERSION, PROTOCOL_VERSION

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metacloud-agent", description="Connects a cluster to Metacloud (outbound only).")
    parser.add_argument("--version", action="version", version=f"metacloud-agent {AGENT_VERSION} (protocol {PROTOCOL_VERSION})")
    parser.add_argument("--server", help="the gateway's URL, e.g. https://metacloud.example.com")
    parser.add_argument("--token", help="the registration token shown by the connect wizard")
    args = parser.parse_args(argv)
    if not args.server or not args.token:
        parser.error("--server and --token are required (copy the command from the cluster connect wizard)")
    print("metacloud-agent: registration arrives with the cluster connect feature", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
