"""``xavi ctl``: command lines to requests, usage errors, and the table output."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

from xavi.ctl import EXIT_USAGE, build_parser, main, request_of
from xavi.ctl_output import cell, duration, render, table


def request(*argv: str, stdin: str = "") -> tuple[str, dict[str, Any]]:
    parser = build_parser()
    return request_of(parser, parser.parse_args(argv), io.StringIO(stdin))


@pytest.mark.parametrize(("argv", "expected"), [
    (("status",), ("status", {})),
    (("restart", "valkey"), ("restart", {"service": "valkey"})),
    (("keys", "list"), ("keys", {"op": "list"})),
    (("keys", "use", "sha256:00"), ("keys", {"op": "use", "key": "sha256:00"})),
    (("fault", "crash", "config"), ("fault", {"kind": "crash", "actor": "config"})),
    (("fault", "hang", "container:app", "2.5"),
     ("fault", {"kind": "hang", "actor": "container:app", "seconds": 2.5})),
    (("fault", "docker", "app", "on"),
     ("fault", {"kind": "docker", "service": "app", "enabled": True})),
    (("fault", "gossip", "drop", "30"), ("fault", {"kind": "gossip", "drop_percent": 30.0})),
    (("fault", "gossip", "delay", "200"), ("fault", {"kind": "gossip", "delay_ms": 200.0})),
])
def test_command_line_becomes_request(argv: tuple[str, ...],
                                      expected: tuple[str, dict[str, Any]]) -> None:
    assert request(*argv) == expected


def test_key_dash_reads_stdin() -> None:
    assert request("keys", "install", "-", stdin="a2V5\n") == \
        ("keys", {"op": "install", "key": "a2V5"})


@pytest.mark.parametrize("argv", [
    ["keys", "install"],
    ["fault", "docker", "app", "maybe"],
    ["fault", "hang", "config"],
    ["fault", "hang", "config", "soon"],
    ["fault", "gossip", "loss", "5"],
    ["fault", "crash", "config", "extra"],
    ["launch"],
    [],
    ["--timeout", "-1", "status"],
    ["--timeout", "nan", "status"],
    ["--timeout", "inf", "status"],
    ["--timeout", "abc", "status"],
])
def test_invalid_command_line_exits_2(argv: list[str]) -> None:
    stderr = io.StringIO()

    code = main(argv, stdout=io.StringIO(), stderr=stderr)

    assert code == EXIT_USAGE


def test_table_aligns_columns() -> None:
    text = table(("NAME", "STATE"), [("a", "running"), ("longer", None)])

    assert text.splitlines() == ["NAME    STATE", "a       running", "longer  -"]


def test_cell_flattens_multiline_errors() -> None:
    assert cell("invalid config (2 problem(s)):\n  - a\n  - b") == \
        "invalid config (2 problem(s)): a; b"


@pytest.mark.parametrize(("seconds", "text"), [(7, "7s"), (366, "6m 6s"), (7260, "2h 1m"),
                                               (90000, "1d 1h"), (None, "-")])
def test_duration_is_readable(seconds: Any, text: str) -> None:
    assert duration(seconds) == text


def test_members_without_gossip_prints_note() -> None:
    stdout = io.StringIO()

    render("members", {}, {"members": [], "note": "gossip not running"}, stdout, io.StringIO())

    assert stdout.getvalue() == "no members (gossip not running)\n"


def test_bundle_prints_only_bundle_on_stdout() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()

    render("bundle", {}, {"bundle": "abc", "left_out": ["cluster.node_name"],
                          "seed_peer": "10.0.0.1:7946"}, stdout, stderr)

    assert stdout.getvalue() == "abc\n"
    assert "cluster.node_name" in stderr.getvalue()
    assert "10.0.0.1:7946" in stderr.getvalue()


def test_default_socket_matches_agent() -> None:
    from xavi import ctl
    from xavi.actors.control_path import DEFAULT_SOCKET

    assert ctl.DEFAULT_SOCKET == str(DEFAULT_SOCKET)


def test_replies_are_scrubbed_of_secrets_except_bundle() -> None:
    from xavi import log
    from xavi.actors.control_commands import execute

    secret = "secret-value-for-scrub-test"
    log.register_secrets(secret)

    def echo(_context: Any, _args: dict[str, Any]) -> dict[str, Any]:
        return {"last_error": f'valkey.max_ram: "{secret}" is not a size', "nested": [secret]}

    commands = {"status": echo, "bundle": echo}
    context = SimpleNamespace(peer_uid=0)
    scrubbed = execute({"cmd": "status", "args": {}}, context, commands)  # type: ignore[arg-type]
    assert secret not in repr(scrubbed)
    assert scrubbed["result"]["nested"] == ["***"]
    bundle = execute({"cmd": "bundle", "args": {}}, context, commands)  # type: ignore[arg-type]
    assert bundle["result"]["nested"] == [secret]
