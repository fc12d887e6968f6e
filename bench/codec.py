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

from ssmshell.protocol import message as m
from ssmshell.protocol.cipher import AGENT, CLIENT, Cipher
from ssmshell.protocol.payloads import PayloadType

TARGET = 50_000


def rate(seconds: float, encrypted: bool) -> float:
    """Messages per second through encode+decode (and AES-GCM both ways if asked)."""
    key = os.urandom(64)
    agent, client = Cipher(key, AGENT), Cipher(key, CLIENT)
    seal = agent.encrypt if encrypted else bytes
    open_ = client.decrypt if encrypted else bytes
    payload = os.urandom(1024)
    msg_id = m.random_id()
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(1000):
            frame = m.Message(m.OUTPUT_STREAM_DATA, n, 0, msg_id, PayloadType.OUTPUT,
                              seal(payload), 1_700_000_000_000).encode()
            open_(m.decode(frame).payload)
            n += 1
        now = time.perf_counter()
        if now - start >= seconds:
            return n / (now - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name, encrypted in (("plain encode+decode", False),
                            ("AES-GCM encrypt+encode+decode+decrypt", True)):
        per_second = rate(args.seconds, encrypted)
        print(f"{name:40s} {per_second:>10,.0f} msg/s  {per_second * 1024 / 1e6:7.1f} MB/s  "
              f"{per_second / TARGET:5.2f}x target ({TARGET:,} msg/s)")


if __name__ == "__main__":
    main()
