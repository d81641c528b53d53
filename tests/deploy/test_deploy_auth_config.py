"""The deployment descriptions wire authentication the way ADR 0002 needs, checked by loading each service's real
settings class from the environment a container would get (there is no Docker engine or cluster here to run them).

- every non-auth service finds auth-svc's JWKS, token and introspection endpoints at auth-svc's address and has a
  client secret, the very one auth-svc has registered for it (else its API key checks fail with 503);
- auth-svc starts in production (AUTH_SECRETS_KEY), and so does its migrate step, which reads the same settings.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from approval_svc.settings import ApprovalSettings
from auth_svc.settings import AuthSettings
from buffer_svc.settings import BufferSettings
from ksef_gateway.settings import GatewaySettings
from notify_svc.settings import NotifySettings
from platform_common.sealing import generate_keypair, public_key_of
from platform_common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
K8S_BASE = ROOT / "deploy" / "k8s" / "base"
CLIENTS: dict[str, type[ServiceSettings]] = {
    "ksef-gateway": GatewaySettings,
    "buffer-svc": BufferSettings,
    "approval-svc": ApprovalSettings,
    "notify-svc": NotifySettings,
}


def _settings(cls: type[ServiceSettings], env: Mapping[str, str]) -> Any:
    with mock.patch.dict(os.environ, env, clear=True):
        return cls()


def _check_platform(auth: AuthSettings, clients: Mapping[str, ServiceSettings], auth_url: str) -> None:
    assert auth.environment == "production" and auth.secrets_key is not None
    for name, settings in clients.items():
        client = settings.auth
        assert client.jwks_url == f"{auth_url}/.well-known/jwks.json", name
        assert client.introspection_url == f"{auth_url}/internal/introspect", name
        assert client.token_url == f"{auth_url}/oauth/token", name
        assert client.client_id in (None, name), name
        assert client.client_secret is not None, name
        registered = auth.service_credentials.get(name)
        assert registered is not None, f"auth-svc does not know {name}'s client secret"
        assert registered.get_secret_value() == client.client_secret.get_secret_value(), name
    secrets = {s.get_secret_value() for s in auth.service_credentials.values()}
    assert len(secrets) == len(clients), "one secret per service"


class TestCompose:
    @staticmethod
    def _env(service: str) -> dict[str, str]:
        compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
        env = compose["services"][service]["environment"]
        # Compose interpolation with no variable set: ${NAME:-default} becomes default.
        return {k: re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items()}

    def test_services_reach_auth_svc_with_registered_secrets(self) -> None:
        auth = _settings(AuthSettings, self._env("auth-svc"))
        clients = {name: _settings(cls, self._env(name)) for name, cls in CLIENTS.items()}
        # auth-svc's container port on the compose network.
        _check_platform(auth, clients, "http://auth-svc:8000")

    def test_the_migrate_step_starts(self) -> None:
        assert _settings(AuthSettings, self._env("auth-svc-migrate")).secrets_key is not None


def _k8s_env(path: Path, secrets: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """The environment of a manifest's first container: its ConfigMap from config.env, secretKeyRefs from
    ``secrets``, and $(NAME) references expanded as the kubelet does."""
    container = yaml.safe_load(path.read_text())["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    if any("configMapRef" in source for source in container.get("envFrom", [])):
        for line in (path.parent / "config.env").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                env[key] = value
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m[1], m[0]), str(item["value"]))
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[(ref["name"], ref["key"])]
    return env


@pytest.fixture
def k8s_secrets() -> dict[tuple[str, str], str]:
    """Every key the base may reference, with distinct made-up values (what `kubectl create secret` would hold)."""
    values = {("ksef-hub-auth", "AUTH_SECRETS_KEY"): "a3NlZi1odWItZGV2LW9ubHktc2VjcmV0cy1rZXktMzI="}
    for prefix in ("AUTH", "GATEWAY", "BUFFER", "APPROVAL", "NOTIFY"):
        values[("ksef-hub-db", f"{prefix}_DB__URL")] = f"postgresql+asyncpg://{prefix.lower()}:x@db:5432/ksefhub"
        values[("ksef-hub-service-credentials", f"{prefix}_AUTH__CLIENT_SECRET")] = f"{prefix.lower()}-0123abcd"
    private_key, public_key = generate_keypair()
    values[("ksef-hub-notify-seal", "NOTIFY_SEAL_PRIVATE_KEY")] = private_key
    values[("ksef-hub-notify-seal", "AUTH_NOTIFY_PUBLIC_KEY")] = public_key
    values[("ksef-hub-notify-webhooks", "NOTIFY_WEBHOOKS__SECRETS_KEY")] = base64.b64encode(bytes(range(32))).decode()
    values[("ksef-hub-metrics", "token")] = "metrics-0123abcd"
    return values


class TestKubernetes:
    def test_services_reach_auth_svc_with_registered_secrets(self, k8s_secrets: dict[tuple[str, str], str]) -> None:
        auth = _settings(AuthSettings, _k8s_env(K8S_BASE / "auth-svc" / "deployment.yaml", k8s_secrets))
        clients = {
            name: _settings(cls, _k8s_env(K8S_BASE / name / "deployment.yaml", k8s_secrets))
            for name, cls in CLIENTS.items()
        }
        service = yaml.safe_load((K8S_BASE / "auth-svc" / "service.yaml").read_text())
        assert [p["port"] for p in service["spec"]["ports"]] == [80], "the URLs below omit the port"
        _check_platform(auth, clients, "http://auth-svc")

    def test_the_migrate_job_starts(self, k8s_secrets: dict[tuple[str, str], str]) -> None:
        env = _k8s_env(K8S_BASE / "auth-svc" / "migrate-job.yaml", k8s_secrets)
        assert _settings(AuthSettings, env).secrets_key is not None


class TestGatewayKsefAndVault:
    """The gateway starts in production only with vault master keys, and each description names its KSeF."""

    @staticmethod
    def _vault_starts(settings: GatewaySettings) -> None:
        from ksef_gateway.vault.keys import load_keyring

        assert settings.environment == "production"
        keyring = load_keyring(settings.vault, environment=settings.environment, data_dir=Path("/nonexistent"))
        assert keyring.active_key_id in keyring.key_ids

    def test_compose_gives_the_gateway_its_master_key_and_the_simulator(self) -> None:
        for service in ("ksef-gateway", "ksef-gateway-migrate"):
            settings = _settings(GatewaySettings, TestCompose._env(service))
            self._vault_starts(settings)
            assert settings.ksef.environment == "sim"
            assert settings.ksef.sim_base_url == "http://ksef-sim:8090/v2"

    def test_kubernetes_master_key_secret_feeds_the_vault(self, k8s_secrets: dict[tuple[str, str], str]) -> None:
        deployment = K8S_BASE / "ksef-gateway" / "deployment.yaml"
        container = yaml.safe_load(deployment.read_text())["spec"]["template"]["spec"]["containers"][0]
        assert {"secretRef": {"name": "ksef-hub-master-key"}} in container["envFrom"]
        # envFrom turns every key of the Secret into a variable: the keys of secrets.example.yaml are the names.
        documents = list(yaml.safe_load_all((K8S_BASE / "secrets.example.yaml").read_text()))
        example = next(d for d in documents if d["metadata"]["name"] == "ksef-hub-master-key")["stringData"]
        assert set(example) == {"GATEWAY_VAULT__MASTER_KEYS", "GATEWAY_VAULT__ACTIVE_KEY_ID"}
        env = _k8s_env(deployment, k8s_secrets) | {
            "GATEWAY_VAULT__MASTER_KEYS": '{"2026-12": "a3NlZi1odWItZGV2LW9ubHktdmF1bHQta2V5LTIwMjY="}',
            "GATEWAY_VAULT__ACTIVE_KEY_ID": "2026-12",
        }
        settings = _settings(GatewaySettings, env)
        self._vault_starts(settings)
        assert settings.ksef.environment == "test"

    @pytest.mark.parametrize(("overlay", "environment"), [("dev", "sim"), ("prod", "prod")])
    def test_overlays_choose_the_ksef_environment(self, overlay: str, environment: str) -> None:
        kustomization = yaml.safe_load((K8S_BASE.parent / "overlays" / overlay / "kustomization.yaml").read_text())
        gateway = next(g for g in kustomization["configMapGenerator"] if g["name"] == "ksef-gateway-config")
        literals = dict(item.split("=", 1) for item in gateway["literals"])
        settings = _settings(GatewaySettings, literals)
        assert settings.ksef.environment == environment
        if environment == "sim":
            assert settings.ksef.sim_base_url == "http://ksef-sim:8090/v2"


def _check_seal_pair(auth_env: Mapping[str, str], notify: NotifySettings) -> None:
    """auth-svc seals invitation and reset links to the public half of the very key notify-svc opens them with."""
    key = notify.seal_key()
    assert key is not None, "notify-svc has no sealing key (production refuses to start)"
    assert auth_env["AUTH_NOTIFY_PUBLIC_KEY"] == public_key_of(key.get_secret_value())


class TestNotifySealKey:
    def test_compose_gives_auth_svc_the_public_half_of_notify_svcs_key(self) -> None:
        _check_seal_pair(TestCompose._env("auth-svc"), _settings(NotifySettings, TestCompose._env("notify-svc")))

    def test_kubernetes_takes_both_halves_from_one_secret(self, k8s_secrets: dict[tuple[str, str], str]) -> None:
        auth_env = _k8s_env(K8S_BASE / "auth-svc" / "deployment.yaml", k8s_secrets)
        notify_env = _k8s_env(K8S_BASE / "notify-svc" / "deployment.yaml", k8s_secrets)
        _check_seal_pair(auth_env, _settings(NotifySettings, notify_env))
        documents = list(yaml.safe_load_all((K8S_BASE / "secrets.example.yaml").read_text()))
        example = next(d for d in documents if d["metadata"]["name"] == "ksef-hub-notify-seal")["stringData"]
        assert set(example) == {"NOTIFY_SEAL_PRIVATE_KEY", "AUTH_NOTIFY_PUBLIC_KEY"}

    def test_kubernetes_gives_notify_svc_its_webhook_secrets_key_and_every_service_its_scrape_token(
        self, k8s_secrets: dict[tuple[str, str], str]
    ) -> None:
        # notify-svc refuses to start in production without the key (notify_svc/wiring.py).
        notify = _settings(NotifySettings, _k8s_env(K8S_BASE / "notify-svc" / "deployment.yaml", k8s_secrets))
        assert notify.environment == "production" and notify.webhooks.secrets_key is not None
        every: dict[str, type[ServiceSettings]] = {"auth-svc": AuthSettings, **CLIENTS}
        for name, cls in every.items():
            settings = _settings(cls, _k8s_env(K8S_BASE / name / "deployment.yaml", k8s_secrets))
            token = settings.telemetry.metrics_token
            assert token is not None and token.get_secret_value() == k8s_secrets[("ksef-hub-metrics", "token")], name
        documents = {
            d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S_BASE / "secrets.example.yaml").read_text())
        }
        assert set(documents["ksef-hub-metrics"]["stringData"]) == {"token"}
        assert set(documents["ksef-hub-notify-webhooks"]["stringData"]) == {"NOTIFY_WEBHOOKS__SECRETS_KEY"}
