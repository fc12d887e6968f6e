"""The prompt_toolkit chooser, driven through a pipe input."""

from __future__ import annotations

import threading

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from ssmshell.aws.targets import Candidate
from ssmshell.errors import Exit, UserError
from ssmshell.picker import VISIBLE_ROWS, interactive_chooser, pick

CANDIDATES = [
    Candidate("i-0000000000000000a", "i-0000000000000000a", "web-1  10.0.0.11  Linux  Online"),
    Candidate("i-0000000000000000b", "i-0000000000000000b", "web-2  10.0.0.12  Linux  Online"),
    Candidate("i-0000000000000000c", "i-0000000000000000c", "DB-1  10.0.0.13  Linux  Online"),
    Candidate("i-0000000000000000d", "i-0000000000000000d", "db-2  10.0.0.14  Windows  Online"),
]
DOWN = "\x1b[B"
UP = "\x1b[A"


def run(keys: str, candidates: list[Candidate] = CANDIDATES, *,
        close_after: float = 0.0) -> Candidate:
    """Type ``keys`` into :func:`pick`; the input then ends (at once, or after
    ``close_after`` seconds), so a picker that ignores a key fails instead of hanging."""
    with create_pipe_input() as inp:
        inp.send_text(keys)
        timer = threading.Timer(close_after, inp.close)
        if close_after:
            timer.start()
        else:
            inp.close()
        try:
            return pick("several instances match", candidates, input=inp,
                        output=DummyOutput())
        finally:
            timer.cancel()


def test_enter_picks_the_first() -> None:
    assert run("\r") == CANDIDATES[0]


def test_filter_then_enter() -> None:
    assert run("web-2\r") == CANDIDATES[1]


def test_filter_is_case_insensitive_over_label_and_detail() -> None:
    assert run(f"db{DOWN}\r") == CANDIDATES[3]
    assert run("0000d\r") == CANDIDATES[3]


def test_down_down_enter_picks_the_third() -> None:
    assert run(f"{DOWN}{DOWN}\r") == CANDIDATES[2]


def test_ctrl_n_ctrl_p_and_bounds() -> None:
    assert run("\x0e\x0e\x10\r") == CANDIDATES[1]
    assert run(f"{UP}\r") == CANDIDATES[0]
    assert run(DOWN * 9 + "\r") == CANDIDATES[3]


def test_scrolls_past_the_visible_rows() -> None:
    many = [Candidate(str(i), f"item-{i}") for i in range(VISIBLE_ROWS + 5)]
    assert run(DOWN * (VISIBLE_ROWS + 2) + "\r", many) == many[VISIBLE_ROWS + 2]


def test_enter_with_no_match_waits_for_more() -> None:
    # "zzz" matches nothing: Enter is ignored; Backspace x3 restores the list.
    assert run("zzz\r\x7f\x7f\x7f\r") == CANDIDATES[0]


def test_changing_the_filter_resets_the_selection() -> None:
    assert run(f"{DOWN}{DOWN}{DOWN}web\r") == CANDIDATES[0]


@pytest.mark.parametrize("keys", ["\x1b", "\x03", "\x04", "web\x1b"])
def test_escape_ctrl_c_and_ctrl_d_cancel(keys: str) -> None:
    # A lone Esc is only known once the terminal's escape-sequence timeout passes,
    # so the input stays open meanwhile; "end of input" below would mean it was ignored.
    with pytest.raises(UserError) as err:
        run(keys, close_after=3.0)
    assert err.value.exit_code == Exit.INTERRUPTED
    assert str(err.value) == "cancelled"


def test_end_of_input_cancels() -> None:
    with pytest.raises(UserError) as err:
        run("web")
    assert err.value.exit_code == Exit.INTERRUPTED
    assert str(err.value) == "cancelled (end of input)"


def test_interactive_chooser_uses_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssmshell.picker as picker

    seen: list[str] = []

    def fake_pick(title: str, candidates: list[Candidate], **kwargs: object) -> Candidate:
        seen.append(title)
        return candidates[-1]

    monkeypatch.setattr(picker, "pick", fake_pick)
    assert interactive_chooser()("t", CANDIDATES) == CANDIDATES[-1]
    assert seen == ["t"]
