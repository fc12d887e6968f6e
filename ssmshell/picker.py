"""A small prompt_toolkit chooser for clusters, tasks, containers and instances.

Type to filter (case-insensitive substring over label and detail), Up/Down or
Ctrl-P/Ctrl-N to move, Enter to choose, Esc or Ctrl-C to cancel. It draws on
stderr below the cursor (not full screen) and erases itself when done, so stdout
stays clean for the session. prompt_toolkit is imported only here; the CLI loads
this module only when it has a terminal and something to choose.
"""

from __future__ import annotations

import sys
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.output import create_output

from ssmshell.aws.targets import Candidate, Chooser
from ssmshell.errors import Exit, UserError

#: Rows of candidates shown at once; the list scrolls to keep the selection visible.
VISIBLE_ROWS = 10


class _State:
    """The filter's matches, the selected row and the first row shown."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.matches = list(candidates)
        self.index = 0
        self.top = 0

    def refilter(self, text: str) -> None:
        needle = text.strip().lower()
        self.matches = [c for c in self.candidates
                        if needle in f"{c.label}  {c.detail}".lower()]
        self.index = self.top = 0

    def move(self, delta: int) -> None:
        if not self.matches:
            return
        self.index = max(0, min(len(self.matches) - 1, self.index + delta))
        if self.index < self.top:
            self.top = self.index
        elif self.index >= self.top + VISIBLE_ROWS:
            self.top = self.index - VISIBLE_ROWS + 1

    def fragments(self) -> StyleAndTextTuples:
        if not self.matches:
            return [("italic", "  (nothing matches)\n")]
        width = max(len(c.label) for c in self.matches)
        out: StyleAndTextTuples = []
        for row in range(self.top, min(len(self.matches), self.top + VISIBLE_ROWS)):
            candidate = self.matches[row]
            selected = row == self.index
            style = "reverse" if selected else ""
            out.append((style, f"{'>' if selected else ' '} {candidate.label:<{width}}"))
            if candidate.detail:
                out.append((style if selected else "fg:ansibrightblack",
                            f"  {candidate.detail}"))
            out.append(("", "\n"))
        shown = f"{len(self.matches)}/{len(self.candidates)}"
        out.append(("fg:ansibrightblack",
                    f"  {shown} · ↑↓ move · Enter choose · Esc cancel"))
        return out


def pick(title: str, candidates: list[Candidate], *, input: Any = None,
         output: Any = None) -> Candidate:
    """Let the user choose one of ``candidates``.

    Args:
        title: the header line, e.g. ``no --cluster given; clusters``.
        candidates: what can be chosen (at least one).
        input: a prompt_toolkit Input; default the terminal on stdin.
        output: a prompt_toolkit Output; default the terminal on stderr.

    Returns:
        The chosen candidate.

    Raises:
        UserError: cancelled (Esc, Ctrl-C, Ctrl-D, end of input), with
            :attr:`Exit.INTERRUPTED`.
    """
    state = _State(candidates)
    query = Buffer(multiline=False, on_text_changed=lambda buf: state.refilter(buf.text))
    bindings = KeyBindings()

    @bindings.add("up")
    @bindings.add("c-p")
    def _up(event: KeyPressEvent) -> None:
        state.move(-1)

    @bindings.add("down")
    @bindings.add("c-n")
    def _down(event: KeyPressEvent) -> None:
        state.move(1)

    @bindings.add("pageup")
    def _page_up(event: KeyPressEvent) -> None:
        state.move(-VISIBLE_ROWS)

    @bindings.add("pagedown")
    def _page_down(event: KeyPressEvent) -> None:
        state.move(VISIBLE_ROWS)

    @bindings.add("enter")
    def _enter(event: KeyPressEvent) -> None:
        if state.matches:
            event.app.exit(result=state.matches[state.index])

    @bindings.add("escape", eager=True)
    @bindings.add("c-c")
    @bindings.add("c-d")
    def _cancel(event: KeyPressEvent) -> None:
        event.app.exit(exception=UserError("cancelled", Exit.INTERRUPTED))

    layout = Layout(HSplit([
        Window(FormattedTextControl([("bold", title)]), height=1, dont_extend_height=True),
        Window(BufferControl(query, input_processors=[BeforeInput("> ", style="bold")]),
               height=1, dont_extend_height=True),
        Window(FormattedTextControl(state.fragments), dont_extend_height=True),
    ]), focused_element=query)
    app: Application[Candidate] = Application(
        layout=layout, key_bindings=bindings, full_screen=False, erase_when_done=True,
        mouse_support=False, input=input,
        output=output if output is not None else create_output(stdout=sys.stderr))
    try:
        return app.run()
    except KeyboardInterrupt:
        raise UserError("cancelled", Exit.INTERRUPTED) from None
    except EOFError:
        raise UserError("cancelled (end of input)", Exit.INTERRUPTED) from None


def interactive_chooser() -> Chooser:
    """A :data:`~ssmshell.aws.targets.Chooser` that asks with :func:`pick` on the terminal."""

    def choose(title: str, candidates: list[Candidate]) -> Candidate:
        return pick(title, candidates)

    return choose
