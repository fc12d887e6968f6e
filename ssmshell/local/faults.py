"""Fault injection for the local Session Manager (PROTOCOL.md §15.9).

A :class:`Faults` value says what to do to the frames of one session; a
:class:`FaultyLink` applies it to one direction of the websocket. Decisions come
from a seeded ``random.Random`` so a failing schedule can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Faults:
    """What goes wrong in a session. Probabilities are per frame, both directions.

    Attributes:
        drop: drop a frame.
        duplicate: deliver a frame twice.
        reorder: hold a frame back and deliver it after the next one.
        delay: deliver a frame up to this many seconds late (uniformly drawn).
        corrupt_digest: flip a payload byte without fixing the digest (agent→client
            only, unless the agent checks digests: ``AgentOptions.strict_digest``).
        cut_after: close the client's websocket after this many agent→client frames
            (once per connection; abrupt, code 1006) — then the client must resume.
        cut_every: abort every connection after this many *new* output messages
            (resends and acks do not count, so each connection makes progress).
        bye_after: like ``cut_after`` but a clean close 1000 "Bye" without
            channel_closed (the hourly-close pattern).
        cut_at: abort the connection when these (0-based) new output messages have
            been delivered, counted over the whole session.
        cut_at_input: abort the connection when the agent has received these (0-based)
            new input messages from the client.
        freeze_after: after this many new output messages, the connection goes silent
            (nothing sent, nothing read, no pongs): a dead peer, once per session.
        hostile: make the agent a hostile peer: ``garbage`` (random binary frames after
            the handshake), ``oversized`` (one 64 MiB frame), ``unknown_action`` (a
            HandshakeRequest with an unknown required action), ``downgrade`` (plaintext
            Output after KMS was agreed), ``bad_challenge`` (a challenge sealed with a
            key the client does not have).
        kms_decrypt_fail: the agent's KMS Decrypt fails (InvalidCiphertextException).
        ready_delay: the agent's session handler is not ready for this many seconds
            after the session starts (its input is not acked meanwhile).
        seed: seed of the decisions.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt_digest: float = 0.0
    cut_after: int | None = None
    cut_every: int | None = None
    bye_after: int | None = None
    cut_at: frozenset[int] = frozenset()
    cut_at_input: frozenset[int] = frozenset()
    freeze_after: int | None = None
    hostile: str | None = None
    kms_decrypt_fail: bool = False
    ready_delay: float = 0.0
    seed: int | None = None

    @property
    def breaks_links(self) -> bool:
        """Whether frames are lost on purpose (per-frame faults, cuts, a frozen link)."""
        return self.touches_frames or bool(
            self.cut_after or self.cut_every or self.cut_at or self.cut_at_input
            or self.bye_after or self.freeze_after)

    @property
    def touches_frames(self) -> bool:
        """Whether any per-frame fault is on."""
        return any((self.drop, self.duplicate, self.reorder, self.delay, self.corrupt_digest))


class FaultyLink:
    """Applies :class:`Faults` to frames going one way.

    Args:
        faults: the fault settings.
        deliver: coroutine that really delivers one frame.
        rng: the shared random source of the session.
    """

    def __init__(self, faults: Faults, deliver: Callable[[bytes], Awaitable[None]],
                 rng: random.Random) -> None:
        self.faults = faults
        self._deliver = deliver
        self._rng = rng
        self._held: bytes | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"frames": 0, "dropped": 0, "duplicated": 0, "reordered": 0,
                      "delayed": 0, "corrupted": 0}

    async def send(self, frame: bytes) -> None:
        """Deliver ``frame`` with the faults applied."""
        f, rng = self.faults, self._rng
        self.stats["frames"] += 1
        if not f.touches_frames:
            await self._deliver(frame)
            return
        if f.drop and rng.random() < f.drop:
            self.stats["dropped"] += 1
            return
        if f.corrupt_digest and len(frame) > 120 and rng.random() < f.corrupt_digest:
            self.stats["corrupted"] += 1
            pos = rng.randrange(120, len(frame))
            frame = frame[:pos] + bytes([frame[pos] ^ 0x01]) + frame[pos + 1:]
        copies = 2 if f.duplicate and rng.random() < f.duplicate else 1
        self.stats["duplicated"] += copies - 1
        if f.reorder and self._held is None and rng.random() < f.reorder:
            self.stats["reordered"] += 1
            self._held = frame
            return
        for _ in range(copies):
            await self._emit(frame)
        if self._held is not None:
            held, self._held = self._held, None
            await self._emit(held)

    async def _emit(self, frame: bytes) -> None:
        if self.faults.delay and self._rng.random() < 0.5:
            self.stats["delayed"] += 1
            wait = self._rng.random() * self.faults.delay

            async def later() -> None:
                await asyncio.sleep(wait)
                # The link may have gone away meanwhile: that is a drop.
                with contextlib.suppress(Exception):
                    await self._deliver(frame)

            task = asyncio.get_running_loop().create_task(later())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        await self._deliver(frame)

    async def flush(self) -> None:
        """Deliver a held-back frame (so reordering never loses the last frame)."""
        if self._held is not None:
            held, self._held = self._held, None
            await self._emit(held)
