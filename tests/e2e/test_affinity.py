"""Conversation affinity end to end: a key (x-ttft-router-affinity, or the body's `user`)
stays on the provider that served it while that pair is healthy, and moves when it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.e2e.conftest import Proxy, running_proxy, scripted_config
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

# p0 is preferred by the policy's fixed order; affinity outranks it
POLICY = """\
defaults:
  order: [p0, p1]
  affinity: {enabled: true, ttl_s: 600}
  client_controls: [affinity, only]
"""
MESSAGES = [{"role": "user", "content": "hi"}]


async def served(proxy: Proxy, key: str | None = None, **kw: Any) -> str:
    headers = {"x-ttft-router-affinity": key} if key else {}
    raw = await proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, extra_headers={**headers, **kw.pop("headers", {})}, **kw
    )
    return str(raw.headers["x-ttft-router-provider"])


async def decisions(proxy: Proxy, count: int) -> list[dict[str, Any]]:
    async with proxy.admin() as admin:

        async def logged() -> list[dict[str, Any]] | None:
            rows = (await admin.get("/admin/decisions", params={"model": "m"})).json()
            return rows["decisions"] if rows["count"] == count else None

        found: list[dict[str, Any]] = await wait_until(logged, timeout=5)
        return found


async def test_affinity_holds_a_conversation_and_releases_it_when_the_pair_fails(
    tmp_path: Path,
) -> None:
    async with scripted_provider() as p0, scripted_provider() as p1:
        config = scripted_config(tmp_path, POLICY, p0, p1)
        async with running_proxy(config) as proxy:
            only_p1 = {"x-ttft-router-provider-only": "p1"}
            assert await served(proxy, "conv-1", headers=only_p1) == "p1"  # bound to p1
            assert await served(proxy, "conv-1") == "p1"  # held, though the order says p0
            assert await served(proxy) == "p0"  # no key: the policy's order
            assert await served(proxy, "conv-2") == "p0"
            held = (await decisions(proxy, 4))[2]  # newest first
            assert held["winner"] == "p1"
            assert "bound by affinity to p1" in held["controls"]
            p1.mode = "500"  # the pair fails: failover to p0, and the key moves there
            assert await served(proxy, "conv-1") == "p0"
            p1.mode = "ok"
            assert await served(proxy, "conv-1") == "p0"  # released from p1
            assert len(p1.requests) == 3 and len(p0.requests) == 4


async def test_the_user_field_is_an_affinity_key(tmp_path: Path) -> None:
    async with scripted_provider() as p0, scripted_provider() as p1:
        config = scripted_config(tmp_path, POLICY, p0, p1)
        async with running_proxy(config) as proxy:
            only_p1 = {"x-ttft-router-provider-only": "p1"}
            assert await served(proxy, user="alice", headers=only_p1) == "p1"
            assert await served(proxy, user="alice") == "p1"
            assert await served(proxy, user="bob") == "p0"
            assert all(s.body.get("user") in ("alice", "bob") for s in p0.requests + p1.requests)
