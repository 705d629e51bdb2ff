from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.core.errors import ConfigError
from proxy.settings.config import load_config
from proxy.settings.policy import PolicyHolder, load_policies

BASE = """
auth: {api_keys: [client-key-0123456789abcdef]}
providers:
  a: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: "${KEY_A:-x}"}
models:
  m: {providers: {a: org/m}}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_valid_config_loads_and_hides_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY_A", "secret-value")
    config = load_config(write(tmp_path, BASE))
    provider = config.providers["a"]
    assert provider.api_key is not None and provider.api_key.get_secret_value() == "secret-value"
    assert "secret-value" not in repr(config)


def test_unknown_provider_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("{a: org/m}", "{a: org/m, zz: other}"))
    message = error_of(path)
    assert str(path) in message
    assert "models.m.providers.zz: unknown provider 'zz' (known: a)" in message


def test_missing_env_var_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = write(tmp_path, BASE.replace("${KEY_A:-x}", "${NOPE_KEY}"))
    assert f"{path}: providers.a.api_key: environment variable NOPE_KEY is not set" in error_of(
        path
    )


def test_bad_url_and_unknown_key_name_field_paths(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace('"http://127.0.0.1:9/v1"', "not a url") + "colour: red\n")
    message = error_of(path)
    assert f"{path}: providers.a.base_url:" in message
    assert f"{path}: colour: Extra inputs are not permitted" in message


def test_check_config_cli_exits_non_zero_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BASE.replace("kind: openai", "kind: carrier-pigeon"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "providers.a" in err
    good = write(tmp_path, BASE, "good.yaml")
    assert main(["check-config", str(good)]) == 0


def test_policy_override_errors_name_model_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m:\n    min_samples: 0\n", "policy.yaml")
    with pytest.raises(ConfigError) as info:
        load_policies([path])
    assert f"{path}: models.m.min_samples: Input should be greater than or equal to 1" in str(
        info.value
    )


def test_policy_reload_keeps_last_good(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults: {min_samples: 7}\n", "policy.yaml")
    holder = PolicyHolder([path])
    assert holder.current.for_model("m").min_samples == 7
    path.write_text("defaults: {min_samples: -1}\n")
    error = holder.reload()
    assert error is not None and "defaults.min_samples" in error
    assert holder.current.for_model("m").min_samples == 7
    path.write_text("defaults: {min_samples: 9}\nmodels: {m: {mode: weighted}}\n")
    assert holder.reload() is None
    assert holder.current.for_model("m").min_samples == 9
    assert holder.current.for_model("m").mode == "weighted"
    assert holder.current.for_model("other").mode == "best"


def test_a_policy_naming_an_unknown_provider_fails_check_config_and_reload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path, "models: {m: {exclude: [provider-z]}}\n", "policy.yaml")
    config = write(tmp_path, BASE + f"policies: [{policy}]\n")
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "models.m.exclude: unknown provider 'provider-z' (configured: a)" in err
    policy.write_text("defaults: {exclude: [a]}\n")
    assert main(["check-config", str(config)]) == 0
    holder = PolicyHolder([policy], providers={"a"})
    policy.write_text("defaults: {exclude: [a, zz]}\n")
    error = holder.reload()
    assert error is not None and "defaults.exclude: unknown provider 'zz'" in error
    assert holder.current.for_model("m").exclude == ["a"]  # the last good policy stays


def test_an_empty_key_from_the_environment_fails_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTFT_ROUTER_API_KEY", "")
    path = write(tmp_path, BASE.replace("client-key-0123456789abcdef", "'${TTFT_ROUTER_API_KEY}'"))
    assert f"{path}: auth.api_keys: the key at index 0 is empty" in error_of(path)


def test_serve_refuses_an_open_proxy_on_a_public_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_config = BASE.replace("{api_keys: [client-key-0123456789abcdef]}",
                               "{allow_unauthenticated: true}")  # fmt: skip
    path = write(tmp_path, open_config)
    assert main(["serve", "--config", str(path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host: auth.allow_unauthenticated: refused on host '0.0.0.0'" in err
    public = write(tmp_path, open_config + "server: {host: 0.0.0.0}\n", "public.yaml")
    assert "refused on host '0.0.0.0'" in error_of(public)


def test_the_prober_expects_at_least_one_replica(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "prober: {expected_replicas: 0, unused_share: 1.5}\n")
    message = error_of(path)
    assert "prober.expected_replicas: Input should be greater than or equal to 1" in message
    assert "prober.unused_share: Input should be less than or equal to 1" in message
    config = load_config(write(tmp_path, BASE + "prober: {expected_replicas: 3}\n"))
    assert config.prober.expected_replicas == 3 and config.prober.unused_interval_s == 21600.0
