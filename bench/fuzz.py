"""Long fuzz run of the codec and the data-channel state machine (issue 7).

Feeds random and mutated frames (mutations of the official client's vectors and of
frames the state machine itself produced, including KMS-encrypted ones) to
``message.decode`` and to client- and agent-role ``DataChannel.receive_frame``.
Anything raised that is not the library's own :class:`ProtocolError` is a failure.

Run: ``.venv/bin/python bench/fuzz.py [--inputs 1000000] [--seed N]``. The CI runs a
shorter version of the same idea through hypothesis (tests/protocol).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import time
from pathlib import Path

from ssmshell.protocol import message as m
from ssmshell.protocol.errors import ProtocolError
from ssmshell.protocol.payloads import PayloadType
from ssmshell.protocol.state import DataChannel, Role

VECTORS = Path(__file__).resolve().parent.parent / "tests" / "data" / "client_messages.json"


def seeds() -> list[bytes]:
    """Valid frames to mutate: the vectors, and frames of every payload type."""
    out: list[bytes] = []
    data = json.loads(VECTORS.read_text())
    for item in data if isinstance(data, list) else data.get("messages", data.values()):
        if isinstance(item, dict):
            for key in ("frame_hex", "hex", "bytes_hex", "frame"):
                if isinstance(item.get(key), str):
                    with contextlib.suppress(ValueError):
                        out.append(bytes.fromhex(item[key]))
                    break
    for kind in (m.OUTPUT_STREAM_DATA, m.INPUT_STREAM_DATA, m.ACKNOWLEDGE, m.CHANNEL_CLOSED):
        for payload_type in (PayloadType.OUTPUT, PayloadType.HANDSHAKE_REQUEST,
                             PayloadType.HANDSHAKE_RESPONSE, PayloadType.HANDSHAKE_COMPLETE,
                             PayloadType.ENC_CHALLENGE_REQUEST, PayloadType.FLAG,
                             PayloadType.EXIT_CODE, PayloadType.SIZE):
            payload = {PayloadType.HANDSHAKE_REQUEST: b'{"AgentVersion":"3.3.1142.0",'
                       b'"RequestedClientActions":[{"ActionType":"SessionType",'
                       b'"ActionParameters":{"SessionType":"Standard_Stream"}}]}',
                       PayloadType.EXIT_CODE: b"EXIT_CODE: 42",
                       PayloadType.SIZE: b'{"cols":80,"rows":24}'}.get(payload_type, b"hi")
            out.append(m.Message(kind, random.randrange(3), 0, m.random_id(), payload_type,
                                 payload, 1_700_000_000_000).encode())
    return out


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(6)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data[rng.randrange(len(data) + 1):][:0] = os.urandom(rng.randrange(1, 16))
        elif op == 2 and data:
            start = rng.randrange(len(data))
            del data[start:start + rng.randrange(1, 32)]
        elif op == 3:
            data = data[:rng.randrange(len(data) + 1)]
        elif op == 4 and len(data) >= 4:  # HeaderLength / PayloadLength style fields
            at = rng.choice([0, 116, 112, min(len(data) - 4, 40)])
            data[at:at + 4] = rng.randrange(1 << 32).to_bytes(4, "big")
        else:
            data += os.urandom(rng.randrange(1, 64))
    return bytes(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    corpus = seeds()
    counts = {"decoded": 0, "typed_error": 0, "other_error": 0}
    failures: list[str] = []
    channels = [DataChannel(Role.CLIENT), DataChannel(Role.AGENT)]
    started = time.perf_counter()
    for n in range(args.inputs):
        frame = os.urandom(rng.randrange(0, 300)) if n % 5 == 0 else mutate(rng, rng.choice(corpus))
        try:
            m.decode(frame)
            counts["decoded"] += 1
        except ProtocolError:
            counts["typed_error"] += 1
        except Exception as exc:
            counts["other_error"] += 1
            failures.append(f"decode: {type(exc).__name__}: {exc} frame={frame[:64].hex()}")
        channel = channels[n % 2]
        try:
            channel.receive_frame(frame)
            channel.next_events()
            channel.data_to_send()
        except ProtocolError:
            channels[n % 2] = DataChannel(channel.role)  # a failed channel stays failed
        except Exception as exc:
            counts["other_error"] += 1
            failures.append(f"receive_frame: {type(exc).__name__}: {exc}")
            channels[n % 2] = DataChannel(channel.role)
    elapsed = time.perf_counter() - started
    print(f"inputs: {args.inputs:,} in {elapsed:.1f} s ({args.inputs / elapsed:,.0f}/s)")
    print(f"decoded: {counts['decoded']:,}  typed errors: {counts['typed_error']:,}  "
          f"other exceptions: {counts['other_error']:,}")
    for line in failures[:20]:
        print("  ", line)
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
