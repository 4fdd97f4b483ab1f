"""ConfigActor with its inotify watcher: one reload per finished change, bad files kept out."""

from __future__ import annotations

import json
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from xavi.actors.config_actor import ConfigActor
from xavi.actors.messages import ConfigChanged, GetStatus, Publish

QUIET = 0.6
"""Seconds without a further publication after which a test concludes none will come."""


class Collector(pykka.ThreadingActor):
    """Stands in for the supervisor and records what the ConfigActor publishes."""

    def __init__(self, published: queue.Queue[Any]) -> None:
        super().__init__()
        self.published = published

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Publish):
            self.published.put(message.message)
        return None


def config_with(services: list[str]) -> dict[str, Any]:
    return {"images": {"app": "example/app:1"}, "services": services}


@pytest.fixture
def published() -> queue.Queue[Any]:
    return queue.Queue()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "xavi.json").write_text(json.dumps(config_with(["app"])))
    return tmp_path


@pytest.fixture
def actor(config_dir: Path, published: queue.Queue[Any]) -> Iterator[pykka.ActorRef[Any]]:
    collector = Collector.start(published)
    ref = ConfigActor.start(collector, config_dir)
    first = published.get(timeout=5)
    assert isinstance(first, ConfigChanged)
    yield ref
    pykka.ActorRegistry.stop_all()


def next_config(published: queue.Queue[Any]) -> ConfigChanged:
    message = published.get(timeout=5)
    assert isinstance(message, ConfigChanged)
    return message


def assert_nothing_published(published: queue.Queue[Any]) -> None:
    with pytest.raises(queue.Empty):
        published.get(timeout=QUIET)


def test_vim_style_rename_save_reloads_once(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    path = config_dir / "xavi.json"
    os.rename(path, config_dir / "xavi.json~")
    path.write_text(json.dumps(config_with(["valkey"])))
    (config_dir / "xavi.json~").unlink()
    assert next_config(published).config.services == ("valkey",)
    assert_nothing_published(published)


def test_symlink_swap_reloads_once(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    versions = config_dir / "versions"
    versions.mkdir()
    (versions / "v2.json").write_text(json.dumps(config_with(["postgres"])))
    os.symlink(versions / "v2.json", config_dir / "xavi.json.tmp")
    os.rename(config_dir / "xavi.json.tmp", config_dir / "xavi.json")
    assert next_config(published).config.services == ("postgres",)
    assert_nothing_published(published)


def test_mv_of_a_new_file_reloads_once(
        actor: Any, config_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        published: queue.Queue[Any]) -> None:
    elsewhere = tmp_path_factory.mktemp("staging") / "new.json"
    elsewhere.write_text(json.dumps(config_with(["backupbot"])))
    os.rename(elsewhere, config_dir / "xavi.json")
    assert next_config(published).config.services == ("backupbot",)
    assert_nothing_published(published)


def test_write_in_two_halves_applies_final_content_once(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    text = json.dumps(config_with(["valkey", "app"]))
    with open(config_dir / "xavi.json", "w") as handle:
        handle.write(text[: len(text) // 2])
        handle.flush()
        time.sleep(0.15)  # the pause under test: a slow writer halfway through
        handle.write(text[len(text) // 2:])
    assert next_config(published).config.services == ("valkey", "app")
    assert_nothing_published(published)


def test_trailing_comma_is_reported_and_nothing_changes(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    (config_dir / "xavi.json").write_text('{\n  "services": ["app"],\n}\n')
    assert_nothing_published(published)
    status = actor.ask(GetStatus(), timeout=5)
    assert "line 3, column 1: invalid JSON" in status["last_error"]
    assert status["generation"] == 1


def test_deleted_file_changes_nothing(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    (config_dir / "xavi.json").unlink()
    assert_nothing_published(published)
    assert actor.ask(GetStatus(), timeout=5)["generation"] == 1


def test_unchanged_content_publishes_nothing(
        actor: Any, config_dir: Path, published: queue.Queue[Any]) -> None:
    (config_dir / "xavi.json").write_text(json.dumps(config_with(["app"]), indent=4))
    assert_nothing_published(published)
