"""Round trips and layer checks of the UDP packet codec (xavi.protocol.codec)."""

from __future__ import annotations

import struct
import zlib

import msgpack
import pytest

from xavi.protocol import codec
from xavi.protocol.codec import (
    add_label_header,
    decode_message,
    decode_packet,
    encode_compound,
    encode_compress,
    encode_message,
    encode_packet,
    parse_compound,
    parse_label_header,
)
from xavi.protocol.constants import COMPOUND_MAX_PARTS, MAX_DECOMPRESSED_PACKET
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    MessageType,
    Nack,
    Ping,
    Suspect,
    User,
)
from xavi.protocol.security import Keyring

LOOPBACK = bytes([127, 0, 0, 1])
VSN = (1, 5, 2, 2, 5, 4)

SAMPLES = [
    Ping(seq_no=7, node="go-1"),
    Ping(seq_no=2**32 - 1, node="go-1", source_addr=LOOPBACK, source_port=7946, source_node="py"),
    IndirectPing(
        seq_no=9,
        target=LOOPBACK,
        port=7947,
        node="t",
        nack=True,
        source_addr=LOOPBACK,
        source_port=7946,
        source_node="py",
    ),
    IndirectPing(seq_no=1, target=bytes(16), port=1, node="v6", nack=False),
    Ack(seq_no=3),
    Ack(seq_no=4, payload=b"\x00\xffcoordinates"),
    Nack(seq_no=5),
    Suspect(incarnation=2, node="a", from_node="b"),
    Alive(incarnation=1, node="ñode", addr=LOOPBACK, port=65535, meta=b"\xff\x80", vsn=VSN),
    Alive(incarnation=0, node="n", addr=bytes(16), port=1, meta=b"", vsn=(0,) * 6),
    Dead(incarnation=8, node="a", from_node="a"),
    User(payload=b""),
    User(payload=bytes(range(256))),
    ErrResp(error="remote error: boom"),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_message_round_trips(message):
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_message_starts_with_its_type_byte(message):
    expected = {
        Ping: MessageType.PING,
        IndirectPing: MessageType.INDIRECT_PING,
        Ack: MessageType.ACK_RESP,
        Nack: MessageType.NACK_RESP,
        Suspect: MessageType.SUSPECT,
        Alive: MessageType.ALIVE,
        Dead: MessageType.DEAD,
        User: MessageType.USER,
        ErrResp: MessageType.ERR,
    }[type(message)]
    assert encode_message(message)[0] == expected


def test_ping_body_matches_go_bytes():
    # Bytes that go-msgpack 0.5.5 wrote for memberlist's ping struct
    # (recorded from the Go test peer's codec mode): map keys sorted,
    # raw strings, uint16 port as 0xcd.
    golden = bytes.fromhex(
        "0085a44e6f6465a161a55365714e6f01aa536f7572636541646472a47f000001"
        "aa536f757263654e6f6465a162aa536f75726365506f7274cd1f0a"
    )
    message = Ping(seq_no=1, node="a", source_addr=LOOPBACK, source_port=7946, source_node="b")
    assert encode_message(message) == golden


def test_ping_omits_empty_source_fields():
    body = msgpack.unpackb(encode_message(Ping(seq_no=1, node="a"))[1:], raw=False)
    assert list(body) == ["Node", "SeqNo"]


def test_empty_ack_payload_is_written_as_nil():
    body = msgpack.unpackb(encode_message(Ack(seq_no=1))[1:], raw=False)
    assert body["Payload"] is None


def test_long_strings_use_raw16_not_str8():
    encoded = encode_message(ErrResp(error="x" * 100))
    assert b"\xd9" not in encoded
    assert b"\xda\x00\x64" in encoded


def test_vsn_is_written_as_raw_bytes():
    body = msgpack.unpackb(encode_message(SAMPLES[8])[1:], raw=True)
    assert body[b"Vsn"] == bytes(VSN)


def test_unknown_and_missing_keys_tolerated():
    body = msgpack.packb({"SeqNo": 4, "Extra": [1, 2]}, use_bin_type=False)
    assert decode_message(b"\x02" + body) == Ack(seq_no=4, payload=b"")


def test_trailing_body_bytes_ignored():
    assert decode_message(encode_message(Nack(seq_no=1)) + b"junk") == Nack(seq_no=1)


@pytest.mark.parametrize(
    "body",
    [
        {"SeqNo": -1, "Node": "a"},
        {"SeqNo": 2**32, "Node": "a"},
        {"SeqNo": 1, "Node": 5},
        {"SeqNo": True, "Node": "a"},
        {"SeqNo": 1, "Node": b"\xff\xfe"},
        {"SeqNo": 1, "SourcePort": 70000},
    ],
)
def test_invalid_field_values_raise_decode_error(body):
    with pytest.raises(DecodeError):
        decode_message(b"\x00" + msgpack.packb(body, use_bin_type=False))


def test_alive_without_six_version_bytes_is_rejected():
    body = {"Incarnation": 1, "Node": "a", "Addr": LOOPBACK, "Port": 1, "Meta": b"", "Vsn": b"\1\2"}
    with pytest.raises(DecodeError):
        decode_message(b"\x04" + msgpack.packb(body, use_bin_type=False))


@pytest.mark.parametrize(
    "message",
    [
        Ping(seq_no=-1, node="a"),
        Ping(seq_no=1, node="a", source_port=65536),
        Alive(incarnation=1, node="a", addr=LOOPBACK, port=1, meta=b"", vsn=(1, 2, 3)),
    ],
)
def test_encoding_out_of_range_fields_raises_value_error(message):
    with pytest.raises(ValueError):
        encode_message(message)


def test_compound_round_trips_many_parts():
    parts = [encode_message(Ping(seq_no=i, node=f"n{i}")) for i in range(COMPOUND_MAX_PARTS)]
    compound = encode_compound(parts)
    assert compound[:2] == bytes([MessageType.COMPOUND, COMPOUND_MAX_PARTS])
    assert parse_compound(compound[1:]) == parts
    assert decode_packet(compound) == [Ping(seq_no=i, node=f"n{i}") for i in range(255)]


def test_compound_rejects_more_than_255_parts():
    with pytest.raises(ValueError):
        encode_compound([b"\x0b\x81\xa5SeqNo\x01"] * 256)


def test_truncated_compound_raises_decode_error():
    compound = encode_compound([encode_message(Nack(seq_no=1)), encode_message(Nack(seq_no=2))])
    with pytest.raises(DecodeError, match="truncated"):
        decode_packet(compound[:-1])


def test_nested_compound_inside_compress_decodes():
    inner = encode_compound([encode_message(m) for m in SAMPLES])
    packet = encode_compress(encode_compound([inner, encode_message(Nack(seq_no=99))]))
    assert decode_packet(packet) == [*SAMPLES, Nack(seq_no=99)]


def test_excessive_nesting_is_rejected():
    packet = encode_message(Nack(seq_no=1))
    for _ in range(12):
        packet = encode_compound([packet])
    with pytest.raises(DecodeError, match="nests"):
        decode_packet(packet)


def test_repeated_compress_layers_share_one_budget():
    half = encode_compress(encode_message(User(payload=b"\x00" * (MAX_DECOMPRESSED_PACKET // 2))))
    assert decode_packet(encode_compound([half]))
    with pytest.raises(DecodeError, match="limit"):
        decode_packet(encode_compound([half, half, half]))


def test_decompression_bomb_is_rejected():
    packet = encode_compress(b"\x00" * (MAX_DECOMPRESSED_PACKET + 1))
    assert len(packet) < 65536
    with pytest.raises(DecodeError, match="limit"):
        decode_packet(packet)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("version", [0, 1])
def test_packet_round_trips_through_every_layer(compress, crc, encrypted, version):
    keyring = Keyring(primary_key=bytes(range(32))) if encrypted else None
    encoded = [encode_message(m) for m in SAMPLES]
    packet = encode_packet(
        encoded, compress=compress, crc=crc, keyring=keyring, encryption_version=version
    )
    assert decode_packet(packet, keyring=keyring) == SAMPLES


def test_compression_is_skipped_when_it_does_not_shrink():
    message = encode_message(Nack(seq_no=1))
    assert encode_packet([message], compress=True) == message


def test_compression_is_used_when_it_shrinks():
    message = encode_message(User(payload=b"a" * 1000))
    assert encode_packet([message], compress=True)[0] == MessageType.COMPRESS


def test_crc_header_covers_the_payload():
    message = encode_message(Nack(seq_no=1))
    packet = encode_packet([message], crc=True)
    assert packet == b"\x0c" + struct.pack(">I", zlib.crc32(message)) + message


def test_crc_mismatch_raises_decode_error():
    packet = bytearray(encode_packet([encode_message(Ping(seq_no=1, node="a"))], crc=True))
    packet[-1] ^= 0x01
    with pytest.raises(DecodeError, match="CRC"):
        decode_packet(bytes(packet))


def test_crc_is_checked_only_at_the_outer_layer():
    inner = encode_packet([encode_message(Nack(seq_no=1))], crc=True)
    with pytest.raises(DecodeError):
        decode_packet(encode_compound([inner]))


def test_label_header_round_trips():
    assert parse_label_header(add_label_header(b"rest", b"lbl")) == (b"lbl", b"rest")
    assert parse_label_header(b"\x00rest") == (b"", b"\x00rest")


def test_labelled_packet_needs_the_same_label():
    keyring = Keyring(primary_key=bytes(16))
    packet = encode_packet([encode_message(Nack(seq_no=1))], label=b"a", keyring=keyring)
    assert decode_packet(packet, label=b"a", keyring=keyring) == [Nack(seq_no=1)]
    with pytest.raises(DecodeError, match="label"):
        decode_packet(packet, label=b"b", keyring=keyring)
    with pytest.raises(DecodeError, match="label"):
        decode_packet(packet, keyring=keyring)


def test_label_is_authenticated_data_of_the_encryption():
    keyring = Keyring(primary_key=bytes(16))
    packet = encode_packet([encode_message(Nack(seq_no=1))], label=b"a", keyring=keyring)
    relabelled = add_label_header(packet[3:], b"b")
    with pytest.raises(DecodeError, match="No installed keys"):
        decode_packet(relabelled, label=b"b", keyring=keyring)


def test_empty_label_header_is_rejected():
    with pytest.raises(DecodeError):
        decode_packet(b"\xf4\x00\x0b\x80")


def test_plaintext_packet_is_rejected_when_encryption_is_required():
    keyring = Keyring(primary_key=bytes(16))
    packet = encode_packet([encode_message(Nack(seq_no=1))])
    with pytest.raises(DecodeError):
        decode_packet(packet, keyring=keyring)
    assert decode_packet(packet, keyring=keyring, require_encryption=False) == [Nack(seq_no=1)]


@pytest.mark.parametrize(
    "kind", [MessageType.PUSH_PULL, MessageType.ENCRYPT, MessageType.HAS_LABEL, 14, 200]
)
def test_non_gossip_types_rejected_in_packet(kind):
    with pytest.raises(DecodeError):
        decode_packet(bytes([kind]) + msgpack.packb({}))


def test_empty_packet_is_rejected():
    with pytest.raises(DecodeError):
        decode_packet(b"")


def test_public_api_matches_all():
    for name in codec.__all__:
        assert callable(getattr(codec, name))
