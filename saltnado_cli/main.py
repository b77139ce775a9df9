"""``saltnado`` command line: ``serve`` a master's API, ``check-config`` first, or run the ``demo``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from saltnado_core import ConfigError
from saltnado_core.config import Dialect, unknown_key_warnings
from saltnado_runtime.files import static_warnings
from saltnado_runtime.logs import attach_log_files, redact_handlers

from .check import check_config, load_settings
from .processes import raise_open_files_limit, supervise
from .serve import run

log = logging.getLogger("saltnado")


def configure_logging(debug: bool) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,  # salt installs its own root handler on import
    )
    # Salt's own loggers are chatty at INFO and some print request payloads.
    logging.getLogger("salt").setLevel(logging.WARNING)
    redact_handlers(logging.getLogger())  # tokens are masked in every record, Salt's too


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the master config is: ``-c DIR`` (its ``master`` file) or ``--master-config FILE``."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-c", "--config-dir", default="/etc/salt", help="directory holding the master config")
    where.add_argument("--master-config", help="path of the master config file")
    parser.add_argument(
        "--api-block", choices=[dialect.value for dialect in Dialect], default=None,
        help="the block of the master config to serve (default: the only one there is; rest_tornado when "
        "both are there)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saltnado", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API for a Salt master")
    add_config_arguments(serve)
    serve.add_argument(
        "--loop", choices=("trio", "asyncio", "uvloop"), default="trio",
        help="the event loop to serve on (default trio; asyncio needs Python 3.11+, "
        "uvloop the optional extra saltnado[uvloop])",
    )
    check = sub.add_parser(
        "check-config",
        help="validate the master config's rest_tornado: (or rest_cherrypy:) block as serve reads it, and say "
        "what it would serve",
        description="Exit status 0: serve would start with this config (warnings about unknown keys "
        "allowed); 2: it would not, and the error names the key and what it allows.",
    )
    add_config_arguments(check)
    demo = sub.add_parser("demo", help="start a private Salt master + minion and serve them")
    demo.add_argument("--port", type=int, default=8000, help="API port (0 picks a free one)")
    demo.add_argument("--no-ping", action="store_true", help="do not fire test.ping every few seconds")
    demo.add_argument("--ping-interval", type=float, default=5.0)
    demo.add_argument(
        "--cluster", action="store_true",
        help="two masters on one event log: a private 3-node NATS JetStream cluster, a node per master "
        "(ingest + edge) and an edge-only node on --port, --port+1, --port+2",
    )
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        configure_logging(False)
        if args.cluster:
            from .cluster_demo import run_cluster_demo

            return run_cluster_demo(port=args.port, ping_interval=None if args.no_ping else args.ping_interval)
        return run_demo(port=args.port, ping_interval=None if args.no_ping else args.ping_interval)

    path = args.master_config or os.path.join(args.config_dir, "master")
    if args.command == "check-config":
        return check_config(path, sys.stdout, sys.stderr, args.api_block)
    try:
        opts, settings = load_settings(path, args.api_block)
        configure_logging(settings.debug)
        attach_log_files(settings)  # log_access_file, log_error_file
    except ConfigError as exc:
        print(f"saltnado: {exc}", file=sys.stderr)
        return 2
    for warning in unknown_key_warnings(opts, args.api_block) + static_warnings(settings):
        log.warning("%s", warning)
    raise_open_files_limit(settings.limits.max_connections)
    workers = settings.num_processes if settings.num_processes > 0 else os.cpu_count() or 1
    if workers > 1:
        settings = dataclasses.replace(settings, num_processes=workers)
        return supervise(workers, settings, lambda s: run(args.loop, s, opts))
    run(args.loop, settings, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
