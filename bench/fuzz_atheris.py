"""Coverage-guided fuzzing of the codec and both state-machine roles with atheris.

Optional (atheris is not a dependency): ``.venv/bin/pip install atheris`` then
``.venv/bin/python bench/fuzz_atheris.py -runs=1000000``. Any exception other than
the library's own :class:`ProtocolError` is a crash that libFuzzer reports.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from ssmshell.protocol import message as m
    from ssmshell.protocol.errors import ProtocolError
    from ssmshell.protocol.state import DataChannel, Role


def one_input(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        m.decode(data)
    for role in (Role.CLIENT, Role.AGENT):
        channel = DataChannel(role)
        try:
            channel.receive_frame(data)
            channel.next_events()
        except ProtocolError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
