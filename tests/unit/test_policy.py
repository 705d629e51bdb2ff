"""policy: files merge defaults then per-model overrides (field by field), a model without an
override gets the defaults, and a policy is frozen."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from proxy.core.errors import ConfigError
from proxy.settings.policy import ModelPolicy, load_policies


def test_a_model_override_keeps_the_defaults_it_does_not_name(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("defaults: {objective: p95, window: {max_samples: 50, max_age_s: 600}}\n")
    fast = tmp_path / "fast.yaml"
    fast.write_text("models: {fast: {window: {max_age_s: 60}}}\n")
    policies = load_policies([base, fast])
    model = policies.for_model("fast")
    assert (model.objective, model.window.max_samples, model.window.max_age_s) == ("p95", 50, 60)
    other = policies.for_model("unlisted")
    assert other is policies.default and other.window.max_age_s == 600


def test_a_later_file_overrides_an_earlier_one_and_errors_name_the_file(tmp_path: Path) -> None:
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("models: {m: {min_samples: 5, hysteresis: 0.2}}\n")
    two.write_text("models: {m: {min_samples: 9}}\n")
    m = load_policies([one, two]).for_model("m")
    assert (m.min_samples, m.hysteresis) == (9, 0.2)
    two.write_text("models: {m: {min_samples: 0}}\n")
    with pytest.raises(ConfigError, match=r"two\.yaml.*models\.m\.min_samples"):
        load_policies([one, two])


def test_policies_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        ModelPolicy().min_samples = 3  # type: ignore[misc]
