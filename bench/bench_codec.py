"""Cost of Xavi's packet codec against the bare libraries it is built on.

For one gossip message, time the full round trip through xavi.protocol
(encode_message, encode_packet with AES-GCM, decode_packet) against the
floor: msgpack.packb, AESGCM.encrypt, AESGCM.decrypt, msgpack.unpackb on
the same map. Prints microseconds per packet and the ratio.

Run: python bench/bench_codec.py [--packets N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import msgpack
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xavi.protocol.codec import decode_packet, encode_message, encode_packet
from xavi.protocol.messages import Alive, Message, Ping
from xavi.protocol.meta import encode_tags
from xavi.protocol.security import Keyring
from xavi.protocol.wire import record_to_map

KEY = bytes(range(32))
LOOPBACK = bytes([127, 0, 0, 1])
MESSAGES: dict[str, Message] = {
    "ping": Ping(
        seq_no=12345, node="node-17", source_addr=LOOPBACK, source_port=7946, source_node="node-3"
    ),
    "alive": Alive(
        incarnation=42,
        node="node-17",
        addr=LOOPBACK,
        port=7946,
        meta=encode_tags({"role": "xavi", "services": "postgres,valkey,app"}),
        vsn=(1, 5, 2, 2, 5, 4),
    ),
}


def per_packet_us(fn: Callable[[], object], packets: int) -> float:
    """Return the best of three runs of ``packets`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(packets):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / packets * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--packets", type=int, default=20000, help="packets per run (default 20000)"
    )
    args = parser.parse_args()

    keyring = Keyring(primary_key=KEY)
    cipher = AESGCM(KEY)
    print(
        f"python {platform.python_version()}, msgpack {msgpack.version}, "
        f"{args.packets} packets per run, best of 3"
    )
    for name, message in MESSAGES.items():
        wire_map = record_to_map(message)

        def xavi_round_trip(message: Message = message) -> object:
            packet = encode_packet([encode_message(message)], keyring=keyring)
            return decode_packet(packet, keyring=keyring)

        def xavi_with_crc(message: Message = message) -> object:
            packet = encode_packet([encode_message(message)], keyring=keyring, crc=True)
            return decode_packet(packet, keyring=keyring)

        def floor(wire_map: dict[str, object] = wire_map) -> object:
            body = msgpack.packb(wire_map, use_bin_type=False)
            nonce = os.urandom(12)
            sealed = cipher.encrypt(nonce, body, None)
            return msgpack.unpackb(cipher.decrypt(nonce, sealed, None), raw=True)

        assert xavi_round_trip() == [message]
        base = per_packet_us(floor, args.packets)
        full = per_packet_us(xavi_round_trip, args.packets)
        crc = per_packet_us(xavi_with_crc, args.packets)
        print(
            f"{name:6s} floor {base:6.2f} us  xavi {full:6.2f} us  ratio {full / base:4.2f}  "
            f"xavi+crc {crc:6.2f} us  ratio {crc / base:4.2f}"
        )


if __name__ == "__main__":
    main()
