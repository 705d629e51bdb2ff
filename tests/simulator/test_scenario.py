"""Scenario models: defaults, limits, overrides, and errors naming file and field path."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from proxy.simulator import ModelBehaviour, Scenario, ScenarioError, load_scenario

from .support import scenario_of

MISSION = Path(__file__).resolve().parents[2] / "proxy" / "scenarios" / "mission.yaml"


def test_a_behaviour_can_be_one_line() -> None:
    behaviour = ModelBehaviour.model_validate({"warm_ttft": {"median_s": 0.3}})
    assert behaviour.warm_ttft.median_s == 0.3
    assert behaviour.cold_chance == 0.0
    assert behaviour.scale_to_zero_after_s is None
    assert behaviour.max_concurrency == 8
    assert behaviour.error_500_rate == behaviour.hang_rate == 0.0


def test_load_reports_file_and_dotted_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "providers:\n  p:\n    api_key: k\n    models:\n"
        "      m:\n        warm_ttft: {median_s: 0}\n"
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message
    assert "providers.p.models.m.warm_ttft.median_s: Input should be greater than 0" in message


def test_unknown_fields_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        "providers:\n  p:\n    api_key: k\n    models:\n"
        "      m: {warm_ttft: {median_s: 1}, cold_chanse: 0.1}\n"
    )
    with pytest.raises(ScenarioError, match=r"providers\.p\.models\.m\.cold_chanse: Extra inputs"):
        load_scenario(path)


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read"):
        load_scenario(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: invalid YAML"):
        load_scenario(broken)


def test_fault_rates_must_not_exceed_one() -> None:
    with pytest.raises(ValidationError, match="must not exceed 1"):
        ModelBehaviour.model_validate(
            {"warm_ttft": {"median_s": 1}, "error_500_rate": 0.6, "hang_rate": 0.5}
        )


def test_ports_must_be_distinct() -> None:
    provider = {"api_key": "k", "port": 18001, "models": {"m": {"warm_ttft": {"median_s": 1}}}}
    with pytest.raises(ValidationError, match="also used by"):
        Scenario.model_validate({"providers": {"a": provider, "b": provider}})


def test_overrides_return_validated_copies() -> None:
    scenario = scenario_of({"m": {"warm_ttft": {"median_s": 1}}}, time_scale=1.0)
    assert scenario.with_time_scale(0.05).time_scale == 0.05
    assert scenario.time_scale == 1.0
    assert scenario.with_seed(42).seed == 42
    fixed = scenario.with_ports({"sim-a": 18002})
    assert fixed.providers["sim-a"].port == 18002
    assert fixed.with_free_ports().providers["sim-a"].port == 0
    with pytest.raises(ValidationError):
        scenario.with_time_scale(0)
    with pytest.raises(ValidationError):
        scenario.with_ports({"sim-a": -1})
    with pytest.raises(ValueError, match="unknown providers"):
        scenario.with_ports({"sim-z": 1})


def test_mission_scenario_matches_the_table_layout() -> None:
    scenario = load_scenario(MISSION)
    assert list(scenario.providers) == ["provider-a", "provider-b", "provider-c"]
    keys = {name: p.api_key for name, p in scenario.providers.items()}
    assert keys == {"provider-a": "sim-key-a", "provider-b": "sim-key-b", "provider-c": "sim-key-c"}
    model_ids = [m for p in scenario.providers.values() for m in p.models]
    assert len(model_ids) == len(set(model_ids)) == 6
    for provider in scenario.providers.values():
        for behaviour in provider.models.values():
            assert behaviour.scale_to_zero_after_s is None
