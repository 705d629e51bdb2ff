"""`ttft-router`: serve | demo | check-config | bench | report | import. Parse, load, call.

Every command validates its input first and exits non-zero with one readable error
(file, field path, reason) instead of a traceback. The bench, report and import commands
live in `proxy.method.cli`, logging set-up in `proxy.telemetry.logs`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Sequence

from proxy.core.errors import ConfigError
from proxy.method.cli import add_bench_parsers
from proxy.method.plan import BenchError
from proxy.settings.auth import check_bind
from proxy.settings.policy import load_checked
from proxy.telemetry.logs import configure_logging
from proxy.upstream.litellm_adapter import require_litellm
from proxy.upstream.redact import redact_logs


def cmd_check_config(args: argparse.Namespace) -> int:
    config, policies = load_checked(args.config)
    require_litellm(config)
    models = ", ".join(config.models)
    clients = ", ".join(config.auth.clients) or "none"
    print(
        f"{args.config}: OK ({len(config.providers)} providers, {len(config.models)} models: "
        f"{models}; named clients: {clients}; policies: "
        f"{', '.join(map(str, policies.paths)) or 'built-in defaults'})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from proxy import server

    config, policies = load_checked(args.config)
    require_litellm(config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers or config.server.workers
    try:
        check_bind(config.auth, host)
    except ValueError as exc:
        raise ConfigError(f"{args.config}: --host: {exc}") from None
    configure_logging(config.server.log_level)
    redact_logs(config)
    if workers > 1:
        if config.server.admin_listen is not None:
            raise ConfigError(f"{args.config}: server.admin_listen needs one worker (got "
                              f"{workers}); run replicas instead of workers")  # fmt: skip
        from proxy.app import app_from_path

        factory = functools.partial(app_from_path, os.path.abspath(args.config))
        server.run_workers(factory, config.server, host, port, workers)
        return 0
    from proxy.app import create_app, tune_gc_for_serving

    app = create_app(config, policies)
    tune_gc_for_serving()
    main, admin = server.uvicorn_configs(app, config.server, host, port)
    server.run(main, admin)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    configure_logging(args.log_level, json_lines=False)
    return run_demo(port=args.port, time_scale=args.time_scale, traffic_rps=args.traffic)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttft-router",
        description="OpenAI-compatible proxy that routes each model to the provider "
        "with the best measured time to first token.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, help="path to config.yaml")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--workers", type=int, help="override server.workers")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config and its policies")
    check.add_argument("config", help="path to config.yaml")
    check.set_defaults(func=cmd_check_config)

    demo = sub.add_parser("demo", help="simulated providers + the proxy, no keys needed")
    demo.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    demo.add_argument("--time-scale", type=float, default=0.2,
                      help="multiply the simulated delays (1.0 = as published)")  # fmt: skip
    demo.add_argument("--traffic", type=float, default=4.0,
                      help="background requests/s so scores fill up (0 = none)")  # fmt: skip
    demo.add_argument("--log-level", default="warning")
    demo.set_defaults(func=cmd_demo)
    add_bench_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"ttft-router {args.command}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"ttft-router {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    logging.getLogger("ttft_router.cli").debug(
        "%s finished in %.1f s", args.command, time.perf_counter() - started
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
