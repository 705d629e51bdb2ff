"""A provider's redirect is a failure, never followed (issue 24, item 7): aiohttp strips
only Authorization across origins, so a configured `x-api-key` would follow a 307 anywhere."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from proxy.settings.config import Config
from tests.e2e.conftest import ADMIN_KEY, CLIENT_KEY, running_proxy
from tests.fakes.scripted import serving

SECRET = "provider-header-secret-0123456789"


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_a_failure_and_no_header_follows_it(status: int) -> None:
    stolen: list[dict[str, str]] = []

    async def thief(request: web.Request) -> web.Response:
        stolen.append(dict(request.headers))
        return web.json_response({"error": {"message": "gotcha"}}, status=500)

    async with serving(thief) as thief_url:

        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            location = thief_url + "/v1/chat/completions"
            return web.Response(status=status, headers={"Location": location})

        async with serving(redirect) as url:
            config = Config.model_validate({
                "auth": {"api_keys": [CLIENT_KEY], "admin_keys": [ADMIN_KEY]},
                "providers": {"p": {"kind": "openai", "base_url": url + "/v1",
                                    "headers": {"x-api-key": SECRET}}},
                "models": {"m": {"providers": {"p": "u"}}},
                "prober": {"enabled": False},
            })  # fmt: skip
            async with running_proxy(config) as proxy, httpx.AsyncClient(timeout=10) as http:
                for stream in (False, True):
                    reply = await http.post(
                        proxy.url + "/v1/chat/completions",
                        json={"model": "m", "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                    )  # fmt: skip
                    assert reply.status_code == 502, reply.text
                    message = reply.json()["error"]["message"]
                    assert f"HTTP {status}: a redirect" in message and "not followed" in message
                    assert SECRET not in reply.text
    assert stolen == []
