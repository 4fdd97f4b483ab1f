"""Wire constants of hashicorp/memberlist 0.2.2, plus Xavi's own safety limits.

Every value here is part of the protocol or a limit that a peer relies on,
unless its comment marks it as a Xavi choice. Sources: memberlist's
``net.go``, ``security.go``, ``util.go``, ``net_transport.go``, ``label.go``
(label support appeared after 0.2.2), and serf 0.9.4's ``serf.go``.
"""

from __future__ import annotations

from typing import Final

# --- Protocol versions (net.go) ---------------------------------------------

# Oldest memberlist protocol version this implementation understands.
PROTOCOL_VERSION_MIN: Final = 1
# Version that memberlist 0.2.2 speaks by default (DefaultLANConfig).
PROTOCOL_VERSION_2_COMPATIBLE: Final = 2
# Newest version understood. Version 3 adds TCP pings, 4 adds nacks, 5 CRC.
PROTOCOL_VERSION_MAX: Final = 5
# A sender adds a CRC only when the receiver's protocol max is at least this.
PROTOCOL_VERSION_CRC: Final = 5
# Indirect probers send nacks only to members whose protocol max reaches this.
PROTOCOL_VERSION_NACK: Final = 4

# Delegate protocol range that serf 0.9.4 declares (ProtocolVersionMin/Max)
# and the version it speaks by default. memberlist refuses members whose
# delegate ranges do not overlap.
SERF_DELEGATE_VERSION_MIN: Final = 2
SERF_DELEGATE_VERSION_MAX: Final = 5
SERF_DELEGATE_VERSION_CURRENT: Final = 4

# --- Size limits ------------------------------------------------------------

# Maximum node metadata size in bytes (MetaMaxSize).
META_MAX_SIZE: Final = 512
# Bytes that memberlist reserves for a compound header, and per compound part.
COMPOUND_HEADER_OVERHEAD: Final = 2
COMPOUND_OVERHEAD: Final = 2
# Bytes reserved for the type byte of a piggybacked user message.
USER_MSG_OVERHEAD: Final = 1
# A compound message counts its parts in one byte.
COMPOUND_MAX_PARTS: Final = 255
# A compound part length is a big-endian uint16.
COMPOUND_MAX_PART_SIZE: Final = 0xFFFF
# Receive buffer of memberlist's UDP listener, so the largest packet it reads.
UDP_PACKET_BUF_SIZE: Final = 65536
# Default Config.UDPBufferSize: the payload budget of one outgoing packet.
UDP_BUFFER_SIZE: Final = 1400
# Largest encrypted stream body a reader accepts (maxPushStateBytes).
MAX_PUSH_STATE_BYTES: Final = 20 * 1024 * 1024
# Concurrent inbound push/pull streams before memberlist drops new ones.
MAX_PUSH_PULL_REQUESTS: Final = 128

# --- Compression (util.go) --------------------------------------------------

# compressionType lzwAlgo: Go's compress/lzw, LSB bit order.
LZW_ALGO: Final = 0
# Literal width of the LZW coder (lzwLitWidth).
LZW_LIT_WIDTH: Final = 8
# Xavi limit, not memberlist's: all compress layers of one packet together
# may decompress to at most this many bytes, so an LZW bomb cannot allocate
# gigabytes.
MAX_DECOMPRESSED_PACKET: Final = 1024 * 1024
# Xavi limit: compress and compound layers nested deeper than this are
# rejected. memberlist itself nests at most compress -> compound.
MAX_NESTING_DEPTH: Final = 8

# --- Integrity (net.go) -----------------------------------------------------

# hasCrcMsg header: type byte plus big-endian CRC-32 (IEEE) of the rest.
CRC_HEADER_SIZE: Final = 5

# --- Encryption (security.go, keyring.go) ------------------------------------

# Version 0 is AES-GCM with PKCS#7 padding (protocol version 1 speakers),
# version 1 is AES-GCM without padding (protocol version 2 and later).
ENCRYPTION_VERSION_MIN: Final = 0
ENCRYPTION_VERSION_MAX: Final = 1
# Size of the leading encryption version byte.
ENCRYPTION_VERSION_SIZE: Final = 1
# AES-GCM nonce size in bytes. Nonces are random per message.
NONCE_SIZE: Final = 12
# AES-GCM authentication tag size in bytes.
TAG_SIZE: Final = 16
# AES block size, the PKCS#7 padding unit of version 0.
AES_BLOCK_SIZE: Final = 16
# Worst-case bytes that encryption adds (encryptOverhead) per version.
ENCRYPT_OVERHEAD: Final = {0: 45, 1: 29}
# Valid key sizes in bytes: AES-128, AES-192, AES-256.
KEY_SIZES: Final = (16, 24, 32)
# Encrypted stream header: encryptMsg type byte plus big-endian uint32 length.
# These five bytes are the stream's AES-GCM additional data.
STREAM_ENCRYPT_HEADER_SIZE: Final = 5

# --- Labels (label.go, memberlist releases after 0.2.2) ----------------------

# Maximum label length. The label header is [244][length byte][label].
LABEL_MAX_SIZE: Final = 255

# --- Serf tags (serf.go) -----------------------------------------------------

# First byte of serf's tag encoding. It is followed by a msgpack map of
# strings. Metadata without it is a bare role string.
SERF_TAG_MAGIC: Final = 0xFF
