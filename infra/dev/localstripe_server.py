"""localstripe for the dev stack: bound to loopback, its state kept in a file we choose.

``python -m infra.dev.localstripe_server --port P --state-file F``. Stock ``localstripe`` listens
on every interface and pickles its store to ``/tmp/localstripe.pickle`` (shared by every user and
checkout on the machine); this imports it unchanged and redirects just those two things.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

log = logging.getLogger("infra.dev.localstripe")


def keep_state_in(path: Path) -> None:
    """Point localstripe's store at ``path`` instead of ``/tmp/localstripe.pickle``."""
    from localstripe import resources

    def load(store: Any) -> None:
        try:
            with path.open("rb") as f:
                # The file is localstripe's own store, written by this process, in a folder only the user writes.
                old = pickle.load(f)  # noqa: S301
        except FileNotFoundError:
            return
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            aside = path.with_suffix(".unreadable")
            os.replace(path, aside)
            log.warning("localstripe state %s is unreadable (%s); starting empty, old file kept as %s",
                        path, exc, aside)
            return
        store.clear()
        store.update(old)

    def dump(store: Any) -> None:
        # localstripe dumps after every write; replace atomically so a kill mid-write cannot corrupt it.
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            # A plain dict: unpickling the Store subclass would call its __setitem__, which dumps again.
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.dev.localstripe_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--from-scratch", action="store_true", help="ignore the saved state")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    keep_state_in(args.state_file)
    from aiohttp import web
    from localstripe import resources, server

    if not args.from_scratch:
        resources.store.try_load_from_disk()
    # run_app stops cleanly on SIGINT and SIGTERM.
    web.run_app(server.app, host=args.host, port=args.port, access_log=logging.getLogger("aiohttp.access"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
