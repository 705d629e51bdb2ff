"""`ttft-router`: serve | demo | check-config (| bench | report | import). Parse, load, call.

Every command validates its input first and exits non-zero with one readable error
(file, field path, reason) instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

import orjson

from proxy.config import Config, load_config
from proxy.errors import ConfigError
from proxy.policy import PolicyHolder


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def load_checked(path: str) -> tuple[Config, PolicyHolder]:
    """Config and policies, or ConfigError naming file, field and reason."""
    config = load_config(path)
    return config, PolicyHolder(config.policy_paths())


def cmd_check_config(args: argparse.Namespace) -> int:
    config, policies = load_checked(args.config)
    models = ", ".join(config.models)
    print(
        f"{args.config}: OK ({len(config.providers)} providers, {len(config.models)} models: "
        f"{models}; policies: {', '.join(map(str, policies.paths)) or 'built-in defaults'})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    config, policies = load_checked(args.config)
    host = args.host or config.server.host
    port = args.port if args.port is not None else config.server.port
    workers = args.workers or config.server.workers
    configure_logging(config.server.log_level)
    common = dict(
        host=host, port=port, loop="uvloop", http="httptools", log_level="warning",
        access_log=False, timeout_graceful_shutdown=10,
    )  # fmt: skip
    if workers > 1:
        os.environ["TTFT_ROUTER_CONFIG"] = os.path.abspath(args.config)
        uvicorn.run("proxy.app:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        from proxy.app import create_app

        uvicorn.run(create_app(config, policies), **common)  # type: ignore[arg-type]
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
    except KeyboardInterrupt:
        return 130
    logging.getLogger("ttft_router.cli").debug(
        "%s finished in %.1f s", args.command, time.perf_counter() - started
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
