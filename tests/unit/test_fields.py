"""Which body fields go upstream (serving.fields): OpenAI's parameters of the endpoint and a
provider's opted-in extras only; the policy's strip and force; content-part URL schemes;
stateful Responses requests."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.errors import InvalidRequest
from proxy.serving.endpoint import (
    CHAT_COMPLETIONS,
    COMPLETIONS,
    EMBEDDINGS,
    RESPONSES_API,
    Endpoint,
)
from proxy.serving.fields import PLAIN, Admitted, admit
from proxy.settings.policy import Fields

EXTRAS = {"vllm": frozenset({"top_k", "chat_template_kwargs"}), "openai": frozenset()}
PROVIDERS = ("vllm", "openai")
MESSAGES = [{"role": "user", "content": "hi"}]


def admitted(
    body: dict[str, Any],
    endpoint: Endpoint = CHAT_COMPLETIONS,
    rules: Fields | None = None,
    providers: tuple[str, ...] = PROVIDERS,
) -> Admitted:
    return admit(body, endpoint, rules or Fields(), EXTRAS, providers)


@pytest.mark.parametrize(
    "field",
    ["models", "route", "plugins", "chat_template", "prompt_embeds", "guided_json",
     "kv_transfer_params", "background", "api_base", "extra_headers"],
)  # fmt: skip
def test_a_field_that_is_no_openai_parameter_and_no_providers_extra_is_refused(field: str) -> None:
    with pytest.raises(InvalidRequest, match=f"argument supplied: {field} ") as e:
        admitted({"model": "m", "messages": MESSAGES, field: 1})
    assert e.value.param == field


def test_a_providers_extra_field_is_admitted_and_sent_only_to_the_providers_that_list_it() -> None:
    body = {"model": "m", "messages": MESSAGES, "top_k": 5, "temperature": 0.2}
    found = admitted(body)
    assert found.extras == {"top_k"} and not found.stateful
    assert found.omit_for(EXTRAS["openai"]) == {"top_k"}
    assert found.omit_for(EXTRAS["vllm"]) == frozenset()
    sent = CHAT_COMPLETIONS.upstream_body(
        body, "m-o", upstream_stream=False, client_stream=False, wants_usage=False,
        omit=found.omit_for(EXTRAS["openai"]),
    )  # fmt: skip
    assert b"top_k" not in sent and b"temperature" in sent
    # an extra of a provider the model does not have is refused
    with pytest.raises(InvalidRequest, match="top_k"):
        admitted({"model": "m", "messages": MESSAGES, "top_k": 5}, providers=("openai",))


def test_openai_parameters_of_another_endpoint_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="messages"):
        admitted({"model": "m", "input": "x", "messages": MESSAGES}, EMBEDDINGS)


def test_policy_strips_and_forces_fields_per_endpoint() -> None:
    chat = {"model": "m", "messages": MESSAGES, "service_tier": "priority", "store": True}
    admitted(chat)  # the default policy: service_tier stripped; store is forced on responses
    assert "service_tier" not in chat and chat["store"] is True
    responses = {"model": "m", "input": "hi", "store": True}
    admitted(responses, RESPONSES_API)
    assert responses["store"] is False
    rules = Fields(strip=["metadata"], force={"chat": {"store": False}})
    chat = {"model": "m", "messages": MESSAGES, "metadata": {"k": "v"}}
    admitted(chat, rules=rules)
    assert chat == {"model": "m", "messages": MESSAGES, "store": False}


@pytest.mark.parametrize(
    ("part", "where"),
    [({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}},
      "messages[0].content[1].image_url.url"),
     ({"type": "image_url", "image_url": "gs://bucket/x.png"}, "messages[0].content[1].image_url"),
     ({"type": "input_file", "file_url": "ftp://host/f.pdf"}, "messages[0].content[1].file_url")],
)  # fmt: skip
def test_a_content_part_url_other_than_http_or_data_is_refused_naming_the_part(
    part: dict[str, Any], where: str
) -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "look"}, part]}
    with pytest.raises(InvalidRequest, match="only http") as e:
        admitted({"model": "m", "messages": [message]})
    assert e.value.param == where


def test_http_and_data_urls_pass() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "HTTP://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    admitted({"model": "m", "messages": [{"role": "user", "content": parts}]})
    # a Responses input item that is a part itself
    with pytest.raises(InvalidRequest) as e:
        admitted({"model": "m", "input": [{"type": "input_image", "image_url": "s3://b/k"}]},
                 RESPONSES_API)  # fmt: skip
    assert e.value.param == "input[0].image_url"


@pytest.mark.parametrize(
    "fields",
    [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"},
     {"prompt": {"id": "pmpt_1"}},
     {"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://mcp.example"}]}],
)  # fmt: skip
def test_a_request_tied_to_one_providers_state_is_stateful(fields: dict[str, Any]) -> None:
    rules = Fields(force={})
    assert admitted({"model": "m", "input": "hi", **fields}, RESPONSES_API, rules).stateful
    plain = {"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}]}
    assert not admitted(plain, RESPONSES_API, rules).stateful


def test_a_completions_prompt_is_no_stored_prompt() -> None:
    """On /v1/completions `prompt` is the prompt itself: such a request is not stateful (it
    fails over and may be hedged); only the Responses API has stored prompts."""
    found = admitted({"model": "m", "prompt": "hi"}, COMPLETIONS)
    assert not found.stateful and found is PLAIN


def test_urls_nested_in_parts_are_checked_and_data_urls_are_not_prompt_text() -> None:
    """A file part's nested `file_id`/`file_url` (which some adapters read as the media's
    location), a tool output's parts; text mentioning a URL is text; an id is no URL; the
    bytes of data URLs are reported (they are media, not prompt tokens)."""
    for part, where in (
        ({"type": "file", "file": {"file_id": "gs://ops-bucket/x.pdf"}},
         "messages[0].content[0].file.file_id"),
        ({"type": "file", "file": {"file_url": "s3://b/k.pdf"}},
         "messages[0].content[0].file.file_url"),
    ):  # fmt: skip
        with pytest.raises(InvalidRequest) as e:
            admitted({"model": "m", "messages": [{"role": "user", "content": [part]}]})
        assert e.value.param == where
    output = [{"type": "function_call_output", "call_id": "c",
               "output": [{"type": "input_image", "image_url": "file:///etc/shadow"}]}]  # fmt: skip
    with pytest.raises(InvalidRequest) as e:
        admitted({"model": "m", "input": output}, RESPONSES_API, Fields(force={}))
    assert e.value.param == "input[0].output[0].image_url"
    image = "data:image/png;base64," + "A" * 10_000
    ok = [{"type": "text", "text": "see gs://bucket/x and file:///y"},
          {"type": "file", "file": {"file_id": "file-abc123"}},
          {"type": "image_url", "image_url": {"url": image}}]  # fmt: skip
    found = admitted({"model": "m", "messages": [{"role": "user", "content": ok}]})
    assert found.media_bytes == len(image)
