"""Routing end to end on the simulated MISSION market, as a smoke test of the wiring: every
request is served by one of its model's providers, decisions and explain say why in the
expected terms, and a policy reload changes which providers may serve. Which provider wins
and how often is a statistical claim: tests/unit/test_convergence.py checks it, seeded and
in-process, through the same scoring and routing."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from proxy.demo import MISSION_MODELS
from proxy.simulator import Market, load_scenario
from tests.e2e.conftest import config_for, policy_file, running_proxy

TIME_SCALE = 0.02
HI = [{"role": "user", "content": "hi"}]


async def test_requests_are_routed_explained_and_steered_by_a_policy_reload(
    tmp_path: Path,
) -> None:
    market_scenario = load_scenario(resources.files("proxy") / "scenarios" / "mission.yaml")
    path = policy_file(tmp_path, "models: {deepseek-v4-pro: {exclude: [provider-a]}}\n")
    async with Market(market_scenario.with_time_scale(TIME_SCALE)) as market:
        config = config_for(market, MISSION_MODELS, policy_file=path)
        async with running_proxy(config) as proxy:
            client = proxy.client()
            served: dict[str, set[str]] = {m: set() for m in MISSION_MODELS}
            for _ in range(15):
                for model in MISSION_MODELS:
                    raw = await client.chat.completions.with_raw_response.create(
                        model=model, messages=HI, max_tokens=2
                    )
                    assert raw.parse().choices[0].message.content
                    served[model].add(raw.headers["x-ttft-router-provider"])
            assert served["kimi-k2.6"] <= set(MISSION_MODELS["kimi-k2.6"])
            assert served["deepseek-v4-pro"] <= {"provider-b", "provider-c"}  # a: excluded
            async with proxy.admin() as admin:
                explained = (await admin.get("/admin/explain",
                                             params={"model": "kimi-k2.6"})).json()  # fmt: skip
                decisions = (await admin.get("/admin/decisions",
                                             params={"limit": 30})).json()["decisions"]  # fmt: skip
                path.write_text("models: {}\n")
                assert (await admin.post("/admin/policy/reload")).status_code == 200
                after = (await admin.get("/admin/explain",
                                         params={"model": "deepseek-v4-pro"})).json()  # fmt: skip
    assert explained["would_choose"] in MISSION_MODELS["kimi-k2.6"]
    reason = explained["reason"]
    assert "90% range" in reason and "n=" in reason and "of draws" in reason, reason
    assert reason.split(" ")[0] in (*MISSION_MODELS["kimi-k2.6"], "holding"), reason
    assert {d["model"] for d in decisions} == set(MISSION_MODELS)
    assert all(d["winner"] == d["attempts"][-1]["provider"] for d in decisions)
    assert all(d["verdict"] in ("best", "holding", "exploring", "measuring") for d in decisions)
    before_reload = {
        c["provider"]: c["excluded_because"]
        for d in decisions if d["model"] == "deepseek-v4-pro" for c in d["candidates"]
    }  # fmt: skip
    assert before_reload["provider-a"] == "excluded by policy"
    eligible = {c["provider"] for c in after["candidates"] if c["excluded_because"] is None}
    assert eligible == set(MISSION_MODELS["deepseek-v4-pro"])
