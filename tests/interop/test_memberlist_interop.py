"""Xavi's codec against a real memberlist 0.2.2 node (the Go test peer) over loopback.

Each exchange runs twice: in plaintext, and with a 32-byte key, LZW
compression and CRC all on. The Go peer uses the "fast" timing preset
(300 ms probes, 250 ms probe timeout) so failure detection finishes in
about a second.
"""

from __future__ import annotations

import socket

import pytest
from go_peer import GoPeerError, b64
from py_node import LOOPBACK, SERF_VSN, read_stream

from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    MessageType,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from xavi.protocol.meta import encode_tags, parse_tags
from xavi.protocol.security import Keyring, decrypt_payload
from xavi.protocol.stream import encode_stream, encode_stream_message

pytestmark = pytest.mark.interop

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(range(200, 232))
CONFIGS = {
    "plain": {"key": None, "compress": False, "crc": False},
    "encrypted-compressed-crc": {"key": KEY, "compress": True, "crc": True},
}


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def config(request):
    return CONFIGS[request.param]


def go_flags(config, **extra):
    flags = {"compression": config["compress"], **extra}
    if config["key"]:
        flags["keys"] = b64(config["key"])
    return flags


def py_options(config, **extra):
    keyring = Keyring(primary_key=config["key"]) if config["key"] else None
    return {"keyring": keyring, "compress": config["compress"], "crc": config["crc"], **extra}


def ping_from(py, target, seq_no):
    return Ping(
        seq_no=seq_no,
        node=target.name,
        source_addr=LOOPBACK,
        source_port=py.port,
        source_node=py.name,
    )


def test_go_acks_python_ping(config, start_go, start_py):
    go = start_go(name="go-1", **go_flags(config))
    py = start_py("py-1", **py_options(config))

    # A user message in the same packet makes compression worth applying.
    packet = py.send(go.address, ping_from(py, go, 41), User(payload=b"interop " * 60))

    _, ack = py.wait_for(lambda m: isinstance(m, Ack) and m.seq_no == 41)
    assert ack == Ack(seq_no=41)
    event = go.wait_event(lambda e: e.get("event") == "user")
    assert bytes.fromhex(event["payload_hex"]) == b"interop " * 60
    if config["key"]:
        plain = decrypt_payload(Keyring(primary_key=KEY), packet)
        assert plain[0] == MessageType.HAS_CRC
        assert plain[5] == MessageType.COMPRESS
    else:
        assert packet[0] == MessageType.COMPOUND


def test_go_acks_python_ping_with_encryption_version_0(start_go, start_py):
    # memberlist speaking protocol version 1 encrypts with version 0 (PKCS#7).
    go = start_go(name="go-v0", keys=b64(KEY), protocol=1)
    py = start_py("py-v0", keyring=Keyring(primary_key=KEY))

    py.send(go.address, ping_from(py, go, 7), encryption_version=0)

    received, _ = py.wait_for(lambda m: isinstance(m, Ack) and m.seq_no == 7)
    assert received.raw[0] == 0


def test_python_acks_go_ping(config, start_go, start_py):
    # Go's Ping() waits one probe timeout, so give a loaded machine slack.
    go = start_go(name="go-2", probe_timeout_ms=2000, **go_flags(config))
    # memberlist adds a CRC only for a member whose name is its IP address.
    py = start_py("127.0.0.1" if config["crc"] else "py-2", **py_options(config))
    if config["crc"]:
        py.push_pull(go.address)

    reply = go.request("ping", node=py.name, addr=f"127.0.0.1:{py.port}")

    # ok means Go matched the ack. Its RTT can be negative: memberlist
    # stamps the ack on receipt but marks "sent" after the send returns.
    assert reply["ok"] is True
    received, ping = py.wait_for(lambda m: isinstance(m, Ping))
    assert ping.node == py.name
    assert ping.source_node == "go-2"
    assert ping.source_addr == LOOPBACK
    assert ping.source_port == go.port
    if config["crc"]:
        assert received.plaintext[0] == MessageType.HAS_CRC


def test_go_relays_indirect_ping_ack(config, start_go, start_py):
    go = start_go(name="go-3", **go_flags(config))
    asker = start_py("asker", **py_options(config))
    target = start_py("target", **py_options(config))

    asker.send(
        go.address,
        IndirectPing(
            seq_no=77,
            target=LOOPBACK,
            port=target.port,
            node="target",
            nack=True,
            source_addr=LOOPBACK,
            source_port=asker.port,
            source_node="asker",
        ),
    )

    _, probe = target.wait_for(lambda m: isinstance(m, Ping))
    assert probe.node == "target"
    assert probe.source_node == "go-3"
    _, ack = asker.wait_for(lambda m: isinstance(m, Ack) and m.seq_no == 77)
    assert ack.seq_no == 77


def test_go_sends_nack_when_indirect_target_is_silent(config, start_go, start_py):
    go = start_go(name="go-4", **go_flags(config))
    asker = start_py("asker", **py_options(config))
    silent = start_py("silent", answer_pings=False, **py_options(config))

    asker.send(
        go.address,
        IndirectPing(
            seq_no=78,
            target=LOOPBACK,
            port=silent.port,
            node="silent",
            nack=True,
            source_addr=LOOPBACK,
            source_port=asker.port,
            source_node="asker",
        ),
    )

    _, nack = asker.wait_for(lambda m: isinstance(m, Nack))
    assert nack == Nack(seq_no=78)
    assert not any(isinstance(m, Ack) for p in asker.packets for m in p.messages)


def test_go_probes_suspects_and_declares_dead(config, start_go, start_py):
    go = start_go(name="go-5", **go_flags(config))
    helper = start_py("helper", **py_options(config))
    silent = start_py("silent", answer_pings=False, **py_options(config))
    helper.extra_nodes = (silent.state(),)

    _, reply = helper.push_pull(go.address)
    # Go sends its own state before it merges the initiator's.
    assert [n.name for n in reply.nodes] == ["go-5"]

    _, indirect = helper.wait_for(lambda m: isinstance(m, IndirectPing))
    assert indirect.node == "silent"
    assert indirect.target == LOOPBACK
    assert indirect.port == silent.port
    assert indirect.nack is True
    assert indirect.source_node == "go-5"
    _, suspect = helper.wait_for(lambda m: isinstance(m, Suspect) and m.node == "silent")
    assert suspect.from_node == "go-5"
    assert suspect.incarnation == 1
    _, dead = helper.wait_for(lambda m: isinstance(m, Dead) and m.node == "silent")
    assert dead.from_node == "go-5"
    go.wait_event(lambda e: e.get("event") == "leave" and e["name"] == "silent")


def test_go_gossips_alive_with_new_metadata(config, start_go, start_py):
    go = start_go(name="go-6", tags='{"role":"db"}', **go_flags(config))
    py = start_py("py-6", **py_options(config))
    py.push_pull(go.address)
    tags = {"role": "db", "services": "postgres,valkey", "padding": "x" * 300}

    go.request("set-meta", tags=tags)

    received, alive = py.wait_for(
        lambda m: isinstance(m, Alive) and m.node == "go-6" and m.incarnation > 1
    )
    assert parse_tags(alive.meta) == tags
    assert alive.addr == LOOPBACK
    assert alive.port == go.port
    assert alive.vsn == SERF_VSN
    if config["compress"]:
        offset = 5 if received.plaintext[0] == MessageType.HAS_CRC else 0
        assert received.plaintext[offset] == MessageType.COMPRESS


def test_python_push_pull_joins_go(config, start_go, start_py):
    go = start_go(name="go-7", tags='{"role":"app"}', user_state_hex="c0ffee", **go_flags(config))
    py = start_py(
        "py-7", meta=encode_tags({"role": "xavi"}), user_state=b"py-state", **py_options(config)
    )

    first, reply = py.push_pull(go.address, join=True)

    assert isinstance(reply, PushPull)
    assert reply.user_state == bytes.fromhex("c0ffee")
    (go_state,) = [n for n in reply.nodes if n.name == "go-7"]
    assert go_state.addr == LOOPBACK
    assert go_state.port == go.port
    assert go_state.state == NodeStateKind.ALIVE
    assert parse_tags(go_state.meta) == {"role": "app"}
    assert go_state.vsn == SERF_VSN
    expected_first = (
        MessageType.ENCRYPT
        if config["key"]
        else (MessageType.COMPRESS if config["compress"] else MessageType.PUSH_PULL)
    )
    assert first == expected_first
    joined = go.wait_event(lambda e: e.get("event") == "join" and e["name"] == "py-7")
    assert joined["port"] == py.port
    assert parse_tags(bytes.fromhex(joined["meta_hex"])) == {"role": "xavi"}
    merge = go.wait_event(lambda e: e.get("event") == "merge")
    assert bytes.fromhex(merge["state_hex"]) == b"py-state"
    assert merge["join"] is True


def test_go_joins_python_listener(config, start_go, start_py):
    go = start_go(name="go-8", **go_flags(config))
    py = start_py("py-8", **py_options(config))

    reply = go.request("join", addrs=[f"127.0.0.1:{py.port}"])

    assert reply["joined"] == 1
    stream = py.wait_stream(lambda s: isinstance(s.message, PushPull))
    assert stream.message.join is True
    assert [n.name for n in stream.message.nodes] == ["go-8"]
    go.wait_event(lambda e: e.get("event") == "join" and e["name"] == "py-8")
    members = {m["name"] for m in go.request("members")["members"]}
    assert members == {"go-8", "py-8"}


def test_go_answers_stream_ping(config, start_go, start_py):
    go = start_go(name="go-9", **go_flags(config))
    py = start_py("py-9", **py_options(config))

    _, reply = py.stream_request(
        go.address, encode_stream_message(Ping(seq_no=5, node="go-9")), keyring=py.keyring
    )

    assert reply == Ack(seq_no=5)


def test_go_err_resp_for_plaintext_stream(start_go, start_py):
    go = start_go(name="go-10", keys=b64(KEY))
    py = start_py("py-10")
    ring = Keyring(primary_key=KEY)

    with socket.create_connection(go.address, timeout=5) as conn:
        conn.sendall(encode_stream_message(PushPull(nodes=(py.state(),))))
        _, reply = read_stream(conn, ring)

    assert reply == ErrResp(error="Encryption is configured but remote state is not encrypted")


def test_user_messages_flow_both_ways(config, start_go, start_py):
    go = start_go(name="go-11", **go_flags(config))
    py = start_py("py-11", **py_options(config))
    py.push_pull(go.address)

    go.request("send-best-effort", node="py-11", payload_hex=b"best effort".hex())
    go.request("send-reliable", node="py-11", payload_hex=b"reliable".hex())

    py.wait_for(lambda m: m == User(payload=b"best effort"))
    stream = py.wait_stream(lambda s: isinstance(s.message, User))
    assert stream.message == User(payload=b"reliable")


def test_wrong_key_is_logged_by_go(start_go, start_py):
    go = start_go(name="go-12", keys=b64(KEY))
    py = start_py("py-12", keyring=Keyring(primary_key=OTHER_KEY))

    py.send(go.address, ping_from(py, go, 1))

    line = go.wait_log("No installed keys could decrypt the message")
    assert "Decrypt packet failed" in line


def test_wrong_key_is_rejected_by_python(start_go, start_py):
    go = start_go(name="go-13", keys=b64(KEY))
    py = start_py("py-13", keyring=Keyring(primary_key=OTHER_KEY))

    with pytest.raises(GoPeerError, match="No ack received|timeout|timed out|No response"):
        go.request("ping", node="py-13", addr=f"127.0.0.1:{py.port}")

    assert py.wait_error("No installed keys could decrypt the message")
    assert not py.packets


def test_key_rotation_through_go_keyring(start_go, start_py):
    go = start_go(name="go-14", keys=b64(KEY))
    py = start_py("py-14", keyring=Keyring(keys=[KEY], primary_key=OTHER_KEY))

    py.send(go.address, ping_from(py, go, 1))
    go.wait_log("No installed keys could decrypt the message")

    assert go.request("keyring", op="install", key=b64(OTHER_KEY))["keys"] == [
        b64(KEY),
        b64(OTHER_KEY),
    ]
    py.send(go.address, ping_from(py, go, 2))
    received, _ = py.wait_for(lambda m: isinstance(m, Ack) and m.seq_no == 2)
    assert decrypt_payload(Keyring(primary_key=KEY), received.raw)

    go.request("keyring", op="use", key=b64(OTHER_KEY))
    assert go.request("keyring", op="remove", key=b64(KEY))["keys"] == [b64(OTHER_KEY)]
    py.send(go.address, ping_from(py, go, 3))
    received, _ = py.wait_for(lambda m: isinstance(m, Ack) and m.seq_no == 3)
    assert decrypt_payload(Keyring(primary_key=OTHER_KEY), received.raw)

    removal = go.request_raw("keyring", op="remove", key=b64(OTHER_KEY))
    assert removal["ok"] is False
    assert "primary" in removal["error"]


def test_go_merges_all_node_states(start_go, start_py):
    go = start_go(name="go-15")
    others = tuple(
        PushNodeState(
            name=f"other-{kind.name.lower()}",
            addr=LOOPBACK,
            port=1 + kind,
            meta=b"",
            incarnation=3,
            state=kind,
            vsn=SERF_VSN,
        )
        for kind in NodeStateKind
    )
    py = start_py("py-15", extra_nodes=others)

    _, reply = py.push_pull(go.address)

    assert [n.name for n in reply.nodes] == ["go-15"]
    go.wait_event(lambda e: e.get("event") == "join" and e["name"] == "other-alive")
    members = {m["name"]: m for m in go.request("members")["members"]}
    assert "py-15" in members
    assert "other-alive" in members
    # memberlist merges a remote dead or left entry for an unknown node as nothing.
    assert "other-dead" not in members
    assert "other-left" not in members


def test_go_leave_gossips_own_dead(config, start_go, start_py):
    go = start_go(name="go-16", **go_flags(config))
    py = start_py("py-16", **py_options(config))
    py.push_pull(go.address)
    go.wait_event(lambda e: e.get("event") == "join" and e["name"] == "py-16")

    go.request("leave", timeout_ms=2000)

    # A node that leaves declares itself dead: From equals Node.
    _, dead = py.wait_for(lambda m: isinstance(m, Dead) and m.node == "go-16")
    assert dead.from_node == "go-16"


def test_python_stream_user_message_reaches_go(config, start_go, start_py):
    go = start_go(name="go-17", **go_flags(config))
    py = start_py("py-17", **py_options(config))

    with socket.create_connection(go.address, timeout=5) as conn:
        body = encode_stream_message(User(payload=b"over tcp"))
        conn.sendall(encode_stream(body, compress=py.compress, keyring=py.keyring))

    event = go.wait_event(lambda e: e.get("event") == "user")
    assert bytes.fromhex(event["payload_hex"]) == b"over tcp"


def test_plain_delegate_range_joins_go(start_go, start_py):
    # A plain memberlist application declares delegate protocol 0..0.
    go = start_go(name="go-18", delegate_min=0, delegate_max=0, delegate_cur=0)
    py = start_py("py-18", vsn=(1, 5, 2, 0, 0, 0))

    _, reply = py.push_pull(go.address)

    assert reply.nodes[0].vsn == (1, 5, 2, 0, 0, 0)
    go.wait_event(lambda e: e.get("event") == "join" and e["name"] == "py-18")


def test_go_rejects_disjoint_delegate_range(start_go, start_py):
    go = start_go(name="go-19", delegate_min=0, delegate_max=0, delegate_cur=0)
    py = start_py("py-19", vsn=SERF_VSN)

    py.push_pull(go.address)

    line = go.wait_log("Failed push/pull merge")
    assert "delegate protocol version" in line
    members = {m["name"] for m in go.request("members")["members"]}
    assert members == {"go-19"}
