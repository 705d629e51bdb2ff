"""A provider's circuit hears of its success at the first token, not at the end of the
stream: a half-open trial that streams for a while lets the next requests through as soon
as it has answered (the soak found healthy circuits opened by fast 500s outrunning slow
successes, benchmarks/soak.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai

from tests.e2e.conftest import running_proxy, scripted_config
from tests.e2e.test_circuits import MESSAGES
from tests.fakes.scripted import scripted_provider


async def test_a_streaming_trial_closes_the_circuit_at_its_first_token(tmp_path: Path) -> None:
    policy = "defaults:\n  circuit: {consecutive_errors: 1, cooldown_s: 300}\n"
    async with (
        scripted_provider("500") as p,
        running_proxy(scripted_config(tmp_path, policy, p)) as proxy,
    ):
        client = proxy.client()
        try:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        except openai.APIStatusError as exc:
            assert exc.status_code == 502
        p.mode, p.chunk_delay_s = "ok", 3.0  # the trial streams for 3 s after its first token
        trial = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        chunks = aiter(trial)
        first = await anext(chunks)
        while not (first.choices and first.choices[0].delta.content):
            first = await anext(chunks)
        # the trial's stream is still running; the provider has answered: the next request is
        # served (its stream starts), not refused with 503 "a trial request is in flight"
        second = await asyncio.wait_for(
            client.chat.completions.create(model="m", messages=MESSAGES, stream=True), 2.5
        )
        await second.close()
        assert "".join([c.choices[0].delta.content or "" async for c in chunks]) == " world"
