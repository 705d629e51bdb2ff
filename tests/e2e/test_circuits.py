"""Circuit breakers as a client sees them: a failing provider is left out after exactly the
configured count of failures, and after a total outage one trial request brings the model
back at once (no cooldown wait), while concurrent requests get 503 with Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai

from tests.e2e.conftest import CLIENT_KEY, running_proxy, scripted_config
from tests.fakes.scripted import scripted_provider
from tests.helpers import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_a_failing_provider_is_left_out_after_exactly_the_configured_failures(
    tmp_path: Path,
) -> None:
    policy = "defaults:\n  circuit: {consecutive_errors: 5, cooldown_s: 300}\n"
    async with (
        scripted_provider("500") as bad,
        scripted_provider() as good,
        running_proxy(scripted_config(tmp_path, policy, bad, good)) as proxy,
    ):
        client = proxy.client()
        for _ in range(60):
            await client.chat.completions.create(model="m", messages=MESSAGES)
            if len(bad.requests) >= 5:
                break
        served = len(good.requests)
        for _ in range(30):  # the scoreboard has caught up long before these end
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(bad.requests) == 5
    assert len(good.requests) == served + 30


async def test_after_a_total_outage_one_trial_request_recovers_the_model(tmp_path: Path) -> None:
    # trial_interval_s 0: the trials' pacing is tested apart (a trial per request here)
    policy = ("defaults:\n  circuit: {consecutive_errors: 2, cooldown_s: 300, "
              "trial_interval_s: 0}\n  failover: {max_attempts: 2}\n")  # fmt: skip
    async with (
        scripted_provider("500") as a,
        scripted_provider("500") as b,
        running_proxy(scripted_config(tmp_path, policy, a, b)) as proxy,
    ):
        client = proxy.client()
        for _ in range(2):  # each request tries both: two failures each
            try:
                await client.chat.completions.create(model="m", messages=MESSAGES)
            except openai.APIStatusError as exc:
                assert exc.status_code == 502
        assert len(a.requests) == len(b.requests) == 2
        # Every circuit is open. One request at a time goes as a trial; others get 503.
        a.delay_s = b.delay_s = 0.5
        trial = asyncio.create_task(_post(proxy.url))
        await wait_until(lambda: len(a.requests) + len(b.requests) == 5, timeout=5)
        refused = await _post(proxy.url)
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "trial request is in flight" in refused.json()["error"]["message"]
        assert (await trial).status_code == 502  # the trial failed: still out
        # The providers come back: the very next request is a trial and succeeds,
        # 300 s before any cooldown would have ended.
        a.mode = b.mode = "ok"
        a.delay_s = b.delay_s = 0.0
        reply = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "hello world"
        for _ in range(5):
            await client.chat.completions.create(model="m", messages=MESSAGES)


async def _post(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            url + "/v1/chat/completions", headers={"Authorization": f"Bearer {CLIENT_KEY}"},
            json={"model": "m", "messages": MESSAGES},
        )  # fmt: skip
