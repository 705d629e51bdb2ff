"""``python -m proxy.simulator SCENARIO.yaml [--time-scale X]``: serve a market until a signal.

Prints each provider's base_url and key, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from proxy.simulator.market import Market
from proxy.simulator.scenario import Scenario, ScenarioError, load_scenario


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.simulator", description="Serve a simulated provider market."
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML file")
    parser.add_argument("--time-scale", type=float, help="override the scenario's time_scale")
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    return parser.parse_args(argv)


async def serve(scenario: Scenario) -> None:
    """Serve ``scenario`` until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Market(scenario) as market:
        for provider in market.providers:
            models = ", ".join(scenario.providers[provider].models)
            print(
                f"{provider}: base_url={market.base_url(provider)} "
                f"api_key={market.api_key(provider)} models=[{models}]",
                flush=True,
            )
        print(f"time_scale={scenario.time_scale} seed={scenario.seed}; Ctrl-C to stop", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = _parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
        if args.time_scale is not None:
            scenario = scenario.with_time_scale(args.time_scale)
        if args.seed is not None:
            scenario = scenario.with_seed(args.seed)
    except (ScenarioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(scenario))
    return 0


if __name__ == "__main__":
    sys.exit(main())
