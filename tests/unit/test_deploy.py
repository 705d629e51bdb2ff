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


def test_compose_drops_capabilities_and_keeps_the_redis_password_off_command_lines() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["read_only"] is True, name
    redis = compose["services"]["redis"]
    script = redis["command"][0]
    assert "requirepass" not in script and redis["entrypoint"] == ["/bin/sh", "-c"]
    conf = script.split("<<CONF\n", 1)[1].split("\nCONF\n", 1)[0]
    assert "$$REDIS_PASSWORD" in conf  # only inside the config file the shell writes
    assert "$$REDIS_PASSWORD" not in script.replace(conf, "")
    assert "user default off" in conf and "~ttft:*" in conf and "-@dangerous" in conf
    url = compose["services"]["ttft-router"]["environment"]["REDIS_URL"]
    assert url.startswith("redis://ttft-router:")


def test_kubernetes_mounts_no_token_and_limits_the_network() -> None:
    kube = DEPLOY / "kubernetes"
    names = yaml.safe_load((kube / "kustomization.yaml").read_text())["resources"]
    parsed = [yaml.safe_load((kube / name).read_text()) for name in names]
    docs = {doc["kind"]: doc for doc in parsed}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    policy = docs["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    blocks = [to["ipBlock"] for rule in policy["egress"] for to in rule.get("to", ())
              if "ipBlock" in to]  # fmt: skip
    assert blocks and all("169.254.0.0/16" in b["except"] for b in blocks)


def test_secrets_of_a_deployment_are_git_ignored() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("config.yaml", "deploy/.env", ".env"):
        subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path], check=True)
    for path in ("deploy/config.yaml", "deploy/.env.example", "config.example.yaml"):
        kept = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", path])
        assert kept.returncode == 1, path


def test_the_image_ships_litellm_only_when_asked(tmp_path: Path) -> None:
    runtime = (ROOT / "requirements-runtime.lock").read_text()
    extra = (ROOT / "requirements-litellm.lock").read_text()
    assert "\nlitellm==" not in runtime and "\nopenai==" not in runtime
    assert "\nlitellm==" in extra
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'if [ "$WITH_LITELLM" = "true" ]' in dockerfile
    froms = [line for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms and all(line.split()[1] == "${PYTHON_IMAGE}" for line in froms)
    image = next(line for line in dockerfile.splitlines() if line.startswith("ARG PYTHON_IMAGE="))
    assert "@sha256:" in image or "TODO(digest)" in dockerfile  # see the Dockerfile's note
    config = tmp_path / "config.yaml"
    config.write_text(
        "auth: {api_keys: [client-key-0123456789abcdef]}\n"
        "providers: {a: {kind: litellm, litellm_provider: anthropic}}\n"
        "models: {m: {providers: {a: claude}}}\n"
    )
    without = (
        "import sys; sys.modules['litellm'] = None  # as if not installed\n"
        "from proxy.cli import main; sys.exit(main(['check-config', sys.argv[1]]))"
    )
    done = subprocess.run([sys.executable, "-c", without, str(config)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "providers.a: needs litellm, which this install lacks" in done.stderr
    assert "pip install 'ttft-router[litellm]'" in done.stderr
