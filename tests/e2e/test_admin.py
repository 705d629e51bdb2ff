"""The admin API: its own keys, scores, decisions with attempts, explain, policy reload."""

from __future__ import annotations

from pathlib import Path

import httpx

from proxy.simulator import Market
from tests.e2e.conftest import CLIENT_KEY, config_for, policy_file, running_proxy, scenario
from tests.helpers import wait_until

FAST = {"warm_ttft": {"median_s": 0.005, "sigma": 0.1}, "tokens_per_s": 2000}
HI = [{"role": "user", "content": "hi"}]


async def test_admin_surfaces(tmp_path: Path) -> None:
    policy = policy_file(tmp_path, "defaults: {min_samples: 3}\n")
    async with Market(scenario({"p": {"m-p": FAST}, "q": {"m-q": FAST}})) as market:
        config = config_for(market, {"m": {"p": "m-p", "q": "m-q"}}, policy_file=policy)
        async with running_proxy(config) as proxy:
            client = proxy.client()
            ids = []
            for _ in range(8):
                r = await client.chat.completions.with_raw_response.create(model="m", messages=HI)
                ids.append(r.headers["x-ttft-router-decision-id"])
            async with proxy.admin() as admin, httpx.AsyncClient(base_url=proxy.url) as anon:
                assert (await anon.get("/admin/scores")).status_code == 401
                wrong = await anon.get("/admin/scores", headers={"Authorization": "Bearer x"})
                assert wrong.status_code == 401 and wrong.json()["error"]["type"]
                client_key = {"Authorization": f"Bearer {CLIENT_KEY}"}
                assert (await anon.get("/admin/scores", headers=client_key)).status_code == 401

                async def logged() -> list[dict[str, object]] | None:
                    rows = (await admin.get("/admin/decisions", params={"model": "m"})).json()
                    return rows["decisions"] if rows["count"] == 8 else None

                decisions = await wait_until(logged, timeout=5)
                assert [d["id"] for d in decisions] == ids[::-1]  # newest first
                first = decisions[-1]
                assert first["reason"].startswith("no pair of the model measured yet")
                assert first["winner"] in ("p", "q") and first["attempts"][0]["outcome"] == "ok"
                assert {c["provider"] for c in first["candidates"]} == {"p", "q"}

                scores = (await admin.get("/admin/scores")).json()
                assert {p["provider"] for p in scores["pairs"]} == {"p", "q"}
                assert sum(p["n"] for p in scores["pairs"]) == 8
                assert scores["store"]["backend"] == "memory" and scores["store"]["ok"]

                explain = (await admin.get("/admin/explain", params={"model": "m"})).json()
                assert explain["would_choose"] in ("p", "q") and explain["reason"]
                assert explain["policy"]["min_samples"] == 3
                missing = await admin.get("/admin/explain", params={"model": "zz"})
                assert missing.status_code == 404

                policy.write_text("defaults: {min_samples: -5}\n")
                bad = await admin.post("/admin/policy/reload")
                assert bad.status_code == 400 and "min_samples" in bad.json()["error"]["message"]
                view = (await admin.get("/admin/policy")).json()
                assert view["defaults"]["min_samples"] == 3 and view["last_reload_error"]
                policy.write_text("defaults: {min_samples: 4}\n")
                good = await admin.post("/admin/policy/reload")
                assert good.status_code == 200 and good.json()["defaults"]["min_samples"] == 4
                status = (await admin.get("/admin/status")).json()
                assert status["policy_last_reload_error"] is None


async def test_admin_disabled_without_admin_keys() -> None:
    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        config = config_for(
            market, {"m": {"p": "m-p"}}, auth={"api_keys": [CLIENT_KEY], "admin_keys": []}
        )
        async with running_proxy(config) as proxy, proxy.admin() as admin:
            response = await admin.get("/admin/scores")
            assert response.status_code == 403
            assert "admin API is disabled" in response.json()["error"]["message"]


async def test_keys_configured_as_sha256_digests() -> None:
    import hashlib

    def digest(key: str) -> str:
        return "sha256:" + hashlib.sha256(key.encode()).hexdigest()

    hashed_client, plain_client = "hashed-client-key-0123456789", "plain-client-key-0123456789"
    hashed_admin = "hashed-admin-key-0123456789"

    async with Market(scenario({"p": {"m-p": FAST}})) as market:
        config = config_for(
            market,
            {"m": {"p": "m-p"}},
            auth={
                "api_keys": [digest(hashed_client), plain_client],
                "admin_keys": [digest(hashed_admin)],
            },
        )
        async with running_proxy(config) as proxy, httpx.AsyncClient(base_url=proxy.url) as h:
            for key in (hashed_client, plain_client):
                ok = await proxy.client(api_key=key).chat.completions.create(model="m", messages=HI)
                assert ok.choices[0].message.content
            body = {"model": "m", "messages": HI}
            for key in (digest(hashed_client), hashed_admin, "plain-client-key"):
                r = await h.post(
                    "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                )
                assert r.status_code == 401 and r.json()["error"]["message"] == "invalid API key"
            admin = {"Authorization": "Bearer hashed-admin-key-0123456789"}
            assert (await h.get("/admin/scores", headers=admin)).status_code == 200
            client = {"Authorization": "Bearer hashed-client-key-0123456789"}
            assert (await h.get("/admin/scores", headers=client)).status_code == 401
