"""The composition layer (ssmshell/runner.py) without a network."""

from __future__ import annotations

import gc

from ssmshell.aws.api import SessionInfo
from ssmshell.channel import Channel
from ssmshell.runner import run_session


class _NoAws:
    """Aws stand-in: the session below never opens, so only the terminate call happens."""

    def __init__(self) -> None:
        self.terminated: list[str] = []

    def terminate_session(self, session_id: str) -> None:
        self.terminated.append(session_id)


def test_a_session_runs_with_the_objects_made_before_it_frozen() -> None:
    gc.unfreeze()
    before: list[int] = []  # a container: the cyclic collector tracks it
    try:
        async def body(channel: Channel) -> int:
            assert gc.get_freeze_count() > 0
            assert gc.is_tracked(before)
            assert all(o is not before for g in range(3) for o in gc.get_objects(generation=g))
            return 7

        aws = _NoAws()
        info = SessionInfo("s-1", "ws://127.0.0.1:9/", "token", "i-1")
        assert run_session(aws, info, body) == 7  # type: ignore[arg-type]
        assert aws.terminated == ["s-1"]  # left without channel_closed: ended on AWS too
    finally:
        gc.unfreeze()
