"""deploy/ stays loadable and consistent: the container config validates, the ConfigMap
carries it verbatim, the manifests parse, and the image's runtime lock is up to date."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proxy.core.errors import ConfigError
from proxy.settings.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV = {
    "HOSTNAME": "pod-0", "TTFT_ROUTER_API_KEY": "client-key-0123456789abcdef",
    "TTFT_ROUTER_ADMIN_KEY": "admin-key-0123456789abcdef",
    "TOGETHER_API_KEY": "t", "FIREWORKS_API_KEY": "f", "REDIS_URL": "redis://127.0.0.1:6379/0",
}  # fmt: skip


def test_the_container_config_validates_as_the_image_lays_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")  # the image's /etc/ttft-router
    config = load_config(tmp_path / "config.yaml")
    assert config.store.kind == "redis" and config.server.admin_listen == "127.0.0.1:9090"
    assert config.server.shutdown_drain_s < 30


def test_the_configmap_carries_deploy_config_yaml_verbatim() -> None:
    configmap = yaml.safe_load((DEPLOY / "kubernetes" / "configmap.yaml").read_text())
    assert configmap["data"]["config.yaml"] == (DEPLOY / "config.yaml").read_text()


def test_the_manifests_parse_and_the_deployment_probes_readyz() -> None:
    kinds = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        kinds[doc.get("kind", path.name)] = doc
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] > 25 + 5  # drain + preStop
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"redis", "ttft-router"} <= set(compose["services"])


def test_the_runtime_lock_is_up_to_date() -> None:
    script = ROOT / "scripts" / "runtime-lock.py"
    subprocess.run([sys.executable, str(script), "--check"], check=True, timeout=60)
    assert "requirements-runtime.lock" in (ROOT / "Dockerfile").read_text()


def test_the_kustomization_ships_no_secret_and_the_example_secret_cannot_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = DEPLOY / "kubernetes"
    resources = yaml.safe_load((kube / "kustomization.yaml").read_text())["resources"]
    kinds = [yaml.safe_load((kube / name).read_text())["kind"] for name in resources]
    assert "Secret" not in kinds and "Deployment" in kinds
    example = yaml.safe_load((kube / "secret.example.yaml").read_text())["stringData"]
    for name, value in {**ENV, **example}.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    with pytest.raises(ConfigError, match=r"auth\.api_keys: the key at index 0 has 10 char"):
        load_config(tmp_path / "config.yaml")
