"""Config validation: every problem reported with its path, suggestions, defaults."""

import json

import pytest

from xavi.config import SERVICES, parse_config_text, parse_size, validate
from xavi.errors import ConfigError

EXAMPLE = {
    "control": {"url": "https://api.example.com", "interval": 30},
    "docker": {"registry": "docker.io", "username": "myuser", "password": "mypassword"},
    "images": {
        "app": "myorg/app:latest",
        "valkey": "valkey/valkey:8",
        "postgres": "postgres:16",
        "backupbot": "wearecococo/backupbot:latest",
    },
    "valkey": {"max_ram": "512m", "max_cpu": "0.5"},
    "postgres": {"max_ram": "1g", "max_cpu": "1.0", "storage_path": "/mnt/data/postgres"},
    "cluster": {"bind_port": 7946, "peers": ["192.0.2.10:7946", "192.0.2.11:7946"]},
    "services": ["app", "valkey"],
}


def problems_of(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(raw)
    return info.value.problems


def test_original_example_is_valid() -> None:
    config = validate(EXAMPLE)
    assert config.services == ("valkey", "app")
    assert config.service["valkey"].limits.memory_bytes == 512 * 1024**2
    assert config.service["valkey"].limits.nano_cpus == 500_000_000
    assert config.service["postgres"].storage_path == "/mnt/data/postgres"
    assert config.cluster.peers == ("192.0.2.10:7946", "192.0.2.11:7946")


def test_omitted_services_means_all_four() -> None:
    raw = {k: v for k, v in EXAMPLE.items() if k != "services"}
    assert validate(raw).services == SERVICES


def test_empty_services_runs_gossip_only() -> None:
    assert validate({**EXAMPLE, "services": []}).services == ()


def test_two_mistakes_are_both_reported_with_paths() -> None:
    raw = json.loads(json.dumps(EXAMPLE))
    raw["postgres"]["max_ram"] = "12x"
    raw["cluster"]["bind_port"] = 70000
    problems = problems_of(raw)
    assert len(problems) == 2
    assert problems[0] == 'postgres.max_ram: "12x" is not a size like 512m or 1g'
    assert problems[1].startswith("cluster.bind_port: 70000 is not a port")


def test_unknown_key_names_the_closest_known_one() -> None:
    problems = problems_of({**EXAMPLE, "servces": ["app"]})
    assert problems == ["servces: unknown key (did you mean 'services'?)"]
    problems = problems_of({**EXAMPLE, "valkey": {"max_mem": "1g"}})
    assert problems == ["valkey.max_mem: unknown key (did you mean 'max_ram'?)"]


def test_unknown_service_is_reported_with_its_index() -> None:
    problems = problems_of({**EXAMPLE, "services": ["app", "postgress"]})
    assert problems == ["services[1]: \"postgress\" is not a service (did you mean 'postgres'?)"]


def test_app_enabled_without_image_is_an_error() -> None:
    raw = {**EXAMPLE, "images": {"valkey": "valkey/valkey:8"}}
    assert problems_of(raw) == ["images.app: missing, and the service 'app' is enabled"]


def test_bad_peer_and_advertise_address_are_reported() -> None:
    raw = json.loads(json.dumps(EXAMPLE))
    raw["cluster"]["peers"] = ["192.0.2.10", "ok.example:7946"]
    raw["cluster"]["advertise_addr"] = "172.17.0.1"
    problems = problems_of(raw)
    assert any(p.startswith("cluster.peers[0]:") for p in problems)
    assert any(p.startswith("cluster.advertise_addr:") and "bridge" in p for p in problems)
    assert len(problems) == 2


def test_memory_below_docker_minimum_is_rejected() -> None:
    raw = {**EXAMPLE, "valkey": {"max_ram": "1m"}}
    assert problems_of(raw) == ['valkey.max_ram: "1m" is below Docker\'s minimum of 6m']


def test_cpu_quota_is_capped_at_host_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    config = validate({**EXAMPLE, "valkey": {"max_cpu": "8"}})
    assert config.service["valkey"].limits.nano_cpus == 2_000_000_000


@pytest.mark.parametrize("text,expected", [("512m", 512 * 1024**2), ("1g", 1024**3),
                                           ("1.5G", int(1.5 * 1024**3)), ("65536", 65536),
                                           ("64mb", 64 * 1024**2)])
def test_parse_size_accepts_docker_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_trailing_comma_reports_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text('{\n  "services": ["app"],\n}\n')
    assert info.value.problems[0].startswith("line 3, column 1: invalid JSON")
    assert info.value.problems[0].endswith("(a trailing comma before it?)")


def test_empty_file_is_an_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_config_text("  \n")


def test_registry_password_is_hidden_in_repr() -> None:
    config = validate(EXAMPLE)
    assert "mypassword" not in repr(config)
    assert "mypassword" not in repr(config.docker)
