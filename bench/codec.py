"""Codec throughput: encode+decode of 1 KiB Output messages, plain and with AES-GCM.

Run: ``.venv/bin/python bench/codec.py [--seconds N]``. Prints messages per second
(one core) and the ratio to the 50,000 msg/s target of issue 2. The real agent
emits about 1,000 such messages per second per session, so the figure says how
many sessions' worth of frames one core can carry.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from ssmshell.protocol import message as m
from ssmshell.protocol.cipher import AGENT, CLIENT, Cipher
from ssmshell.protocol.payloads import PayloadType

TARGET = 50_000


def plain(seconds: float) -> float:
    payload = os.urandom(1024)
    msg_id = uuid.uuid4()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            frame = m.Message(m.OUTPUT_STREAM_DATA, n, 0, msg_id, PayloadType.OUTPUT,
                              payload, 1_700_000_000_000).encode()
            m.decode(frame)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def encrypted(seconds: float) -> float:
    key = os.urandom(64)
    agent, client = Cipher(key, AGENT), Cipher(key, CLIENT)
    payload = os.urandom(1024)
    msg_id = uuid.uuid4()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            frame = m.Message(m.OUTPUT_STREAM_DATA, n, 0, msg_id, PayloadType.OUTPUT,
                              agent.encrypt(payload), 1_700_000_000_000).encode()
            client.decrypt(m.decode(frame).payload)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name, fn in (("plain encode+decode", plain), ("AES-GCM encrypt+encode+decode+decrypt",
                                                       encrypted)):
        rate = fn(args.seconds)
        print(f"{name:40s} {rate:>10,.0f} msg/s  {rate * 1024 / 1e6:7.1f} MB/s  "
              f"{rate / TARGET:5.2f}x target ({TARGET:,} msg/s)")


if __name__ == "__main__":
    main()
