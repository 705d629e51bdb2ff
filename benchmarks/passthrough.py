"""The floor: a minimal streaming pass-through on ttft-router's stack (uvicorn + aiohttp).

A bare ASGI app, no framework: read the body, POST it to the same path on the upstream
through one pooled aiohttp session, stream the response bytes back as they arrive. No
parsing, no routing, no measurement -- what any Python proxy on this stack costs at least.

    python benchmarks/passthrough.py --upstream http://127.0.0.1:9001 --port 9002
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str) -> Any:
    state: dict[str, aiohttp.ClientSession] = {}

    async def lifespan(receive: Any, send: Any) -> None:
        await receive()  # lifespan.startup
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
        state["session"] = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await state["session"].close()
        await send({"type": "lifespan.shutdown.complete"})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {"content-type": "application/json"}
        async with state["session"].request(
            scope["method"], upstream + scope["path"], data=body, headers=headers
        ) as response:
            content_type = response.headers.get("content-type", "application/json").encode()
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", content_type)]})  # fmt: skip
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9001")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    uvicorn.run(make_app(args.upstream.rstrip("/")), host="127.0.0.1", port=args.port,
                loop="uvloop", http="httptools", log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
