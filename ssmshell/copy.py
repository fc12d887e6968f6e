"""``ssmshell cp``: files and directories to and from instances and ECS containers.

Everything runs over interactive (PTY) sessions through the in-band marker path of
:mod:`ssmshell.sessions.marker`: ``stty raw -echo`` makes the PTY byte-transparent, so
file bytes travel as they are (no base64), and input is fed to the remote script by
``head -c N``. Nothing is installed on the target: the remote side is a short ``sh``
script using ``cat``, ``head``, ``tail``, ``wc``, ``tar``, ``find`` and, when the
target has it, ``sha256sum`` (otherwise sizes are compared, and the user is told).

What a remote script prints (between the markers) is framed by a random per-run token
``K`` that the copied data cannot predict::

    [header line: "F SIZE LEN X" | "D sha256" | "D size"]
    [manifest lines of a directory, then a line "K"]
    [body: file bytes or a tar stream]
    K STATUS DIGEST MESSAGE

The trailer always comes last, so the body is everything before its last ``K``.

* Upload of a file: the local SHA-256 (and size) is computed first and given to the
  script, which writes ``P.ssmshell-part.<id>``, hashes it and moves it into place
  only when the digest matches (else removes it and exits 7).
* Download of a file: the script prints the size, ``head -c``'s the file and then its
  SHA-256; the bytes go to a temporary file next to DEST, renamed when they match.
* Directories: a tar stream (Python's :mod:`tarfile` locally, ``tar`` remotely), then
  per-file SHA-256 lists (``find . -type f -exec sha256sum {} +``) compared with the
  files on the other side.
* Files of at least :data:`PARALLEL_MIN` bytes are split into ``--parallel`` parts,
  each copied in its own session: the agent paces each session's output (about
  1 KiB/ms), so downloads scale with the number of sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import queue
import re
import secrets
import shlex
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from ssmshell.aws.api import Aws, SessionInfo
from ssmshell.channel import ChannelError, ChannelOptions, ConnectError
from ssmshell.errors import Exit, UserError
from ssmshell.runner import guarded, make_channel, notice
from ssmshell.sessions.marker import Markers, MarkerSession, ecs_command, wrap

#: Files at least this large are split into ``--parallel`` parts.
PARALLEL_MIN = 8 * 1024 * 1024
#: Default number of parallel sessions for downloading a large file (uploads: one,
#: see :func:`copy`).
DEFAULT_PARALLEL = 4
#: Extra bytes for the first part of a parallel download: its session is already
#: streaming while the others start (StartSession, then the agent's 1 s read delay),
#: about 1 s at the agent's 1 KiB/ms.
HEAD_START = 1024 * 1024
#: Largest number of parallel sessions accepted.
MAX_PARALLEL = 16
#: Bytes read from a local file at a time.
CHUNK = 64 * 1024
#: Body bytes held back until the end, so that the trailer is never written out.
HOLD = 1024
#: Longest header or manifest line accepted.
MAX_LINE = 64 * 1024
#: tar's block and (default) record sizes.
BLOCK = 512
RECORD = 20 * BLOCK
#: Seconds a best-effort cleanup session may take after a failed upload.
CLEANUP_TIMEOUT = 30.0

#: How a copy checked only by sizes is reported.
SIZES_ONLY = "sizes verified (no sha256sum on the target)"

#: What the remote script's exit statuses mean (when it gives no message of its own).
_REMOTE_ERRORS = {
    2: "no such file or directory",
    5: "not a regular file or directory",
    6: "permission denied",
    7: "checksum mismatch",
}


# ------------------------------------------------------------------------------ paths


@dataclass(frozen=True)
class LocalPath:
    """A path on this machine."""

    path: str


@dataclass(frozen=True)
class RemotePath:
    """``TARGET:PATH`` or ``ecs:CLUSTER/TASK[/CONTAINER]:PATH``.

    Attributes:
        target: the instance (id, Name tag, address) or ``ecs:CLUSTER/TASK[/CONTAINER]``.
        path: the path on the target (``""`` = the session's working directory; a
            leading ``~/`` is the remote ``$HOME``).
        text: as the user typed it, for messages.
    """

    target: str
    path: str
    text: str


Spec = LocalPath | RemotePath


def parse_spec(text: str) -> Spec:
    """Tell a local path from a remote one, as scp does.

    A remote path is ``TARGET:PATH`` with a non-empty TARGET containing no ``/``
    (so ``./a:b`` and ``/x:y`` are local), or ``ecs:CLUSTER/TASK[/CONTAINER]:PATH``.

    Raises:
        UserError: (USAGE) an ``ecs:`` target without ``:PATH``.
    """
    if text.startswith("ecs:"):
        target, sep, path = text[len("ecs:"):].partition(":")
        if not sep or not target:
            raise UserError(f"bad ECS path {text!r}: use ecs:CLUSTER/TASK[/CONTAINER]:PATH",
                            Exit.USAGE)
        return RemotePath("ecs:" + target, path, text)
    colon = text.find(":")
    if colon <= 0 or "/" in text[:colon]:
        return LocalPath(text)
    return RemotePath(text[:colon], text[colon + 1:], text)


def remote_path_expr(path: str) -> str:
    """``path`` as a shell word: quoted, with ``~``/``~/…`` meaning ``$HOME``, ``""`` = ``.``."""
    path = path.rstrip("/") or ("/" if path.startswith("/") else "")
    if path == "":
        return "."
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _remote_name(path: str) -> str:
    """The last component of a remote path ("" when there is none: ``/``, ``.``, ``~``)."""
    name = posixpath.basename(path.rstrip("/"))
    return "" if name in (".", "..", "~") else name


def _local_name(path: str) -> str:
    name = os.path.basename(os.path.abspath(path))
    return "" if name in (".", "..") else name


# ---------------------------------------------------------------------- verification


def file_digest(path: str) -> str:
    """``sha256:<hex>`` of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def check_digest(expected: str, actual: str, what: str) -> None:
    """Compare two digests (``sha256:<hex>`` or ``size:<n>``) of the same data.

    Raises:
        UserError: they differ (a one-line message naming ``what``).
    """
    if expected != actual:
        raise UserError(f"checksum mismatch for {what}: sent {_show(expected)}, "
                        f"received {_show(actual)}")


def _show(digest: str) -> str:
    kind, _, value = digest.partition(":")
    if kind == "sha256":
        return f"SHA-256 {value[:16]}…"
    if kind == "size":
        return f"{value} bytes"
    return digest or "nothing"


def compare_manifests(sent: dict[str, str], received: dict[str, str]) -> list[str]:
    """Problems found comparing the sender's per-file digests with the receiver's.

    Files the receiver has in addition (a directory copied into an existing one) are
    not problems. Returns human-readable lines, empty when everything matches.
    """
    problems = []
    for name in sorted(sent):
        if name not in received:
            problems.append(f"{name}: missing")
        elif received[name] != sent[name]:
            problems.append(f"{name}: {_show(sent[name])} sent, {_show(received[name])} "
                            "received")
    return problems


def parse_manifest(kind: str, lines: list[bytes]) -> dict[str, str]:
    """Per-file digests from ``find . -type f -exec sha256sum {} +`` (kind ``sha256``)
    or ``… -exec wc -c {} +`` (kind ``size``); names relative, without ``./``."""
    result: dict[str, str] = {}
    for raw in lines:
        line = raw
        if kind == "sha256":
            escaped = line.startswith(b"\\")  # GNU: names with \n or \\ are escaped
            if escaped:
                line = line[1:]
            value, sep, name = line.partition(b" ")
            if not sep:
                continue
            if name[:1] in (b" ", b"*"):
                name = name[1:]
            if escaped:
                name = _unescape(name)
        else:
            fields = line.strip().split(b" ", 1)
            if len(fields) != 2:
                continue
            value, name = fields[0], fields[1].lstrip(b" ")
            if not name.startswith(b"./"):  # "total" lines
                continue
        text = os.fsdecode(name)
        result[text[2:] if text.startswith("./") else text] = f"{kind}:{value.decode()}"
    return result


def _unescape(name: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(name):
        if name[i:i + 1] == b"\\" and i + 1 < len(name):
            out += b"\n" if name[i + 1:i + 2] == b"n" else name[i + 1:i + 2]
            i += 2
        else:
            out += name[i:i + 1]
            i += 1
    return bytes(out)


def local_manifest(root: str, kind: str) -> dict[str, str]:
    """Per-file digests (``kind`` ``sha256`` or ``size``) of the regular files under
    ``root``, relative names with ``/``."""
    result: dict[str, str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            result[rel] = file_digest(path) if kind == "sha256" else f"size:{st.st_size}"
    return result


# -------------------------------------------------------------------------- progress


class Progress:
    """One updating line on stderr (bytes, %, MB/s), only when ``enabled``."""

    def __init__(self, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.label = label
        self.total: int | None = None
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._draw(now)

    def _line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        line = f"{self.label}  {_mb(self.done)}"
        if self.total:
            line += f" / {_mb(self.total)}  {min(100, self.done * 100 // self.total):3d}%"
        return line + f"  {self.done / elapsed / 1e6:.1f} MB/s  {elapsed:.1f} s"

    def _draw(self, now: float) -> None:
        self._drawn = now
        sys.stderr.write("\r" + self._line(now) + "\x1b[K")
        sys.stderr.flush()

    def clear(self) -> None:
        """Erase the line (before a notice or an error)."""
        if self.enabled and self._drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._drawn = 0.0

    def notice(self, line: str) -> None:
        self.clear()
        notice(line)

    def finish(self, verified: str) -> None:
        if self.enabled:
            sys.stderr.write("\r" + self._line(time.monotonic()) + f"  {verified}\x1b[K\n")
            sys.stderr.flush()
            self._drawn = 0.0


def _mb(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


# ---------------------------------------------------------------------- remote output


@dataclass
class Trailer:
    """The last line a copy script prints: its status, a digest, a message."""

    status: int
    digest: str
    message: str


class ScriptOutput:
    """Parses a copy script's output (see the module docstring) as it arrives.

    Args:
        token: this run's token.
        on_header: called with the header line (``F …``/``D …``).
        sink: gets the body bytes, in order, never the trailer.
        header: whether a header comes first (else the output starts with the body).
    """

    def __init__(self, token: str, *, on_header: Callable[[str], None] | None = None,
                 sink: Callable[[bytes], None] | None = None, header: bool = True) -> None:
        self.token = token.encode()
        self.on_header = on_header or (lambda line: None)
        self.sink = sink
        self.state = "header" if header else "body"
        self.manifest: list[bytes] = []
        self.noise = bytearray()  # anything unexpected (shell errors), for messages
        self.trailer: Trailer | None = None
        self.header = ""
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        if self.state == "done":
            return
        self._buf += data
        while self.state in ("header", "manifest"):
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise UserError("the remote copy script sent an overlong line",
                                    Exit.PROTOCOL)
                return
            line = bytes(self._buf[:end])
            del self._buf[:end + 1]
            if line.startswith(self.token + b" "):
                self._set_trailer(line)
                return
            if self.state == "header":
                if line[:2] in (b"F ", b"D "):
                    self.header = line.decode("ascii", "replace")
                    self.on_header(self.header)
                    self.state = "body" if line.startswith(b"F ") else "manifest"
                elif len(self.noise) < 4096:
                    self.noise += line + b"\n"
            elif line == self.token:
                self.state = "body"
            else:
                self.manifest.append(line)
        if self.state == "body" and len(self._buf) > 2 * HOLD:
            cut = len(self._buf) - HOLD
            self._body(bytes(self._buf[:cut]))
            del self._buf[:cut]

    def _body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
        elif len(self.noise) < 4096:
            self.noise += data[:4096]

    def _set_trailer(self, line: bytes) -> None:
        fields = line.decode("utf-8", "replace").split(" ", 3)
        try:
            status = int(fields[1])
        except (IndexError, ValueError):
            status = 1
        digest = fields[2] if len(fields) > 2 else "-"
        message = fields[3].strip() if len(fields) > 3 else ""
        self.trailer = Trailer(status, "" if digest == "-" else digest, message)
        self.state = "done"

    def finish(self) -> Trailer | None:
        """The trailer (None if the script ended without one); flushes the body."""
        if self.state == "body":
            at = self._buf.rfind(self.token + b" ")
            if at >= 0:
                end = self._buf.find(b"\n", at)
                self._body(bytes(self._buf[:at]))
                self._set_trailer(bytes(self._buf[at:end if end >= 0 else None]))
            else:
                self._body(bytes(self._buf))
            self._buf.clear()
        return self.trailer


# -------------------------------------------------------------------------- sessions


@dataclass
class Feed:
    """What to send to a remote script's stdin: exactly ``size`` bytes from ``chunks``."""

    size: int
    chunks: Callable[[], Iterator[bytes]]


class _CopySession(MarkerSession):
    """A :class:`MarkerSession` that says when the command has started, and refuses a
    cooked PTY (no ``stty`` on the target), which would not carry binary data."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = asyncio.Event()

    async def _on_output(self, data: bytes) -> None:
        await super()._on_output(data)
        if self._started and not self.started.is_set():
            if self._cooked:
                raise UserError("the target has no 'stty': cp needs a raw terminal there")
            self.started.set()


class Remote:
    """A resolved target: starts sessions running a script there.

    Args:
        aws: the AWS clients.
        spec: the remote path.
        target: an instance id, or an :class:`~ssmshell.aws.targets.EcsTarget`.
        options: channel options.
    """

    def __init__(self, aws: Aws, spec: RemotePath, target: Any,
                 options: ChannelOptions | None = None) -> None:
        self.aws = aws
        self.spec = spec
        self.target = target
        self.options = options

    def start(self, script: str, markers: Markers, stdin_size: int | None) -> SessionInfo:
        if isinstance(self.target, str):
            return self.aws.start_session(self.target, "AWS-StartInteractiveCommand",
                                          {"command": [wrap(script, markers, stdin_size)]})
        t = self.target
        return self.aws.execute_command(t.cluster_arn, t.task_arn, t.container_name,
                                        ecs_command(script, markers, stdin_size), t.target_id)

    async def run(self, script: str, output: ScriptOutput, feed: Feed | None = None,
                  progress: Progress | None = None) -> Trailer:
        """Run ``script`` in a new session; its trailer.

        Raises:
            UserError: the script ended without a trailer.
            ChannelError, ConnectError: the session failed.
        """
        markers = Markers()
        size = feed.size if feed else None
        start = asyncio.ensure_future(asyncio.to_thread(self.start, script, markers, size))
        try:
            info = await asyncio.shield(start)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):  # do not leave a session behind
                info = await start
                await asyncio.to_thread(self.aws.terminate_session, info.session_id)
            raise
        channel = make_channel(self.aws, info, self.options)
        session = _CopySession(channel, markers, notice=notice, on_output=output.feed)
        try:
            if feed is None:
                code = await session.run()
            else:
                code = await _run_fed(session, feed, progress)
        finally:
            if channel.closed_reason is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.to_thread(self.aws.terminate_session,
                                                             info.session_id), 3)
            await channel.close()
        trailer = output.finish()
        if trailer is None:
            noise = output.noise.decode("utf-8", "replace").strip().splitlines()
            why = f": {noise[-1][:200]}" if noise else ""
            raise UserError(f"{self.spec.target}: the remote copy script failed "
                            f"(exit {code}){why}")
        return trailer

    def fail(self, trailer: Trailer) -> UserError:
        """The error for a remote script's failure status."""
        message = trailer.message or _REMOTE_ERRORS.get(trailer.status) or \
            f"remote command failed (exit {trailer.status})"
        return UserError(f"{self.spec.text}: {message}")


async def _run_fed(session: _CopySession, feed: Feed, progress: Progress | None) -> int:
    """Run ``session`` while sending ``feed`` once its command has started."""

    async def send() -> None:
        await session.started.wait()
        for chunk in feed.chunks():
            await session.channel.send_output(chunk)  # waits while the agent is stalled
            if progress is not None:
                progress.add(len(chunk))

    run = asyncio.create_task(session.run())
    feeder = asyncio.create_task(send())
    pending: set[asyncio.Task[Any]] = {run, feeder}
    try:
        while not run.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if feeder in done and not feeder.cancelled() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
        return run.result()
    finally:
        for task in (run, feeder):
            task.cancel()
        await asyncio.gather(run, feeder, return_exceptions=True)


async def _all(tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for every task of a list that may grow; on the first failure cancel the
    others and raise it."""
    try:
        while True:
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            pending = [t for t in tasks if not t.done()]
            if not pending:
                return
            await asyncio.wait(pending, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------- scripts

#: Shared by every script: the token, an error file, ``h`` (digest of stdin, or its
#: size without sha256sum) and ``d STATUS DIGEST [MESSAGE]`` (print the trailer, exit).
_PRELUDE = r"""K=@K@
E=/dev/null; F="${TMPDIR:-/tmp}/.ssmshell-cp.$$"; { : >"$F"; } 2>/dev/null && E=$F
h(){ if command -v sha256sum >/dev/null 2>&1; then
sha256sum | { read -r a b; echo "sha256:$a"; }; else wc -c | { read -r a b; echo "size:$a"; }; fi; }
d(){ m=${3:-$(head -n 1 "$E" 2>/dev/null | head -c 200)}; [ "$E" = /dev/null ] || rm -f "$E"
printf '%s %s %s %s\n' "$K" "$1" "$2" "$m"; exit "$1"; }
"""

#: Prints "D sha256" (or "D size") and the per-file list of the current directory.
_MANIFEST = r"""if command -v sha256sum >/dev/null 2>&1; then
printf 'D sha256\n'; find . -type f -exec sha256sum {} + 2>"$E" || d 4 -
else printf 'D size\n'; find . -type f -exec wc -c {} + 2>"$E" || d 4 -; fi
"""

#: GNU tar will not write an archive to a terminal: it goes through ``cat``, and its
#: status through fd 3.
_DOWNLOAD = r"""P=@P@; N=@N@; M=@M@
if [ -d "$P" ]; then
cd "$P" 2>"$E" || d 3 -
@MANIFEST@printf '%s\n' "$K"
exec 4>&1; s=$({ { tar -cf - . 2>"$E"; echo $? >&3; } | cat >&4; } 3>&1); exec 4>&-
[ "$s" = 0 ] || d 4 -
d 0 -
fi
[ -e "$P" ] || d 2 - "no such file or directory"
[ -f "$P" ] || d 5 - "not a regular file or directory"
[ -r "$P" ] || d 6 - "permission denied"
set -- $(wc -c <"$P"); S=$1; L=$S
[ "$N" -gt 1 ] && [ "$S" -ge "$M" ] && L=$(( (S - @B@ + N - 1) / N + @B@ ))
x=-; [ -x "$P" ] && x=x
printf 'F %s %s %s\n' "$S" "$L" "$x"
head -c "$L" "$P" 2>"$E" || d 4 -
d 0 "$(h <"$P")"
"""

_DOWNLOAD_PART = r"""P=@P@
tail -c +@O@ "$P" 2>"$E" | head -c @L@ || d 4 -
d 0 -
"""

#: Resolves P (into an existing directory: P/NAME) and the temporary name T.
_UPLOAD_DEST = r"""P=@P@
@MUSTDIR@[ -d "$P" ] && P="$P/"@B@
T="$P.ssmshell-part.@R@"
"""

_UPLOAD_FILE = r"""cat 2>"$E" >"$T" || { rm -f "$T"; d 4 -; }
g=$(h <"$T")
[ "$g" = @W@ ] || [ "$g" = @Z@ ] || { rm -f "$T"; d 7 "$g" "checksum mismatch"; }
chmod @X@ "$T" 2>/dev/null
mv -f "$T" "$P" 2>"$E" || { rm -f "$T"; d 4 "$g"; }
d 0 "$g"
"""

_UPLOAD_PART = r"""Q="$T.@k@"
cat 2>"$E" >"$Q" || { rm -f "$Q"; : >"$Q.bad"; d 4 -; }
g=$(h <"$Q")
[ "$g" = @W@ ] || [ "$g" = @Z@ ] || {
rm -f "$Q"; : >"$Q.bad"; d 7 "$g" "checksum mismatch in part @k@"; }
: >"$Q.ok"
"""

#: Part 0's session waits for the other parts, then assembles and checks the file.
_UPLOAD_ASSEMBLE = r"""for j in @OTHERS@; do
while [ ! -e "$T.$j.ok" ]; do
[ -e "$T.$j.bad" ] && { rm -f "$T".*; d 8 - "part $j failed"; }
sleep 0.1 2>/dev/null || sleep 1
done
done
cat @PARTS@ 2>"$E" >"$T" || { rm -f "$T" "$T".*; d 4 -; }
rm -f "$T".*
g=$(h <"$T")
[ "$g" = @WA@ ] || [ "$g" = @ZA@ ] || { rm -f "$T"; d 7 "$g" "checksum mismatch"; }
chmod @X@ "$T" 2>/dev/null
mv -f "$T" "$P" 2>"$E" || { rm -f "$T"; d 4 "$g"; }
d 0 "$g"
"""

_UPLOAD_CLEANUP = r"""rm -f "$T" "$T".*
d 0 -
"""

_UPLOAD_DIR = r"""P=@P@
D=$P; [ -d "$P" ] && D="$P/"@B@
[ -d "$D" ] || mkdir "$D" 2>"$E" || d 4 -
tar -x -o -f - -C "$D" 2>"$E" || d 4 -
cd "$D" 2>"$E" || d 4 -
@MANIFEST@d 0 -
"""


def script(template: str, token: str, **values: str | int) -> str:
    """The prelude and ``template`` with each ``@NAME@`` replaced by ``values[NAME]``
    (shell words, already quoted), in one pass: replaced text is not scanned again."""
    values = {"MANIFEST": _MANIFEST, "K": token, **values}
    return re.sub(r"@([A-Za-z]+)@", lambda m: str(values[m.group(1)]), _PRELUDE + template)


def _token() -> str:
    return "SSMCP" + secrets.token_hex(16)


# ------------------------------------------------------------------------ local tar


@dataclass
class _Member:
    info: tarfile.TarInfo
    header: bytes
    path: str  # the local file


@dataclass
class TarPlan:
    """A directory as the exact tar stream that will be sent.

    Sizes come from one ``lstat`` per entry, so the stream length is known before
    anything is sent (``head -c N`` needs it). A file that changes size meanwhile is
    padded or cut to that size and reported in :attr:`changed`.
    """

    members: list[_Member]
    size: int
    sent: dict[str, str] = field(default_factory=dict)  # name → sha256:… of what was sent
    sizes: dict[str, str] = field(default_factory=dict)  # name → size:…
    changed: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, root: str, warn: Callable[[str], None]) -> TarPlan:
        members: list[_Member] = []
        for dirpath, dirs, files in os.walk(root, onerror=_raise):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                st = os.lstat(path)
                info = tarfile.TarInfo(rel)
                info.mode = stat.S_IMODE(st.st_mode)
                info.mtime = int(st.st_mtime)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                elif stat.S_ISREG(st.st_mode):
                    if not os.access(path, os.R_OK):
                        raise UserError(f"{path}: permission denied")
                    info.type = tarfile.REGTYPE
                    info.size = st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    info.type = tarfile.SYMTYPE
                    info.linkname = os.readlink(path)
                else:
                    warn(f"{path}: not a regular file, directory or symlink: skipped")
                    continue
                header = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
                members.append(_Member(info, header, path))
        size = sum(len(m.header) + _blocks(m.info.size) for m in members) + 2 * BLOCK
        return cls(members, -(-size // RECORD) * RECORD)

    def chunks(self) -> Iterator[bytes]:
        """The stream, exactly :attr:`size` bytes; records what was sent per file."""
        sent = 0
        for member in self.members:
            yield member.header
            sent += len(member.header)
            if not member.info.isreg():
                continue
            digest = hashlib.sha256()
            for chunk in _read_exact(member.path, 0, member.info.size, self.changed):
                digest.update(chunk)
                sent += len(chunk)
                yield chunk
            self.sent[member.info.name] = "sha256:" + digest.hexdigest()
            self.sizes[member.info.name] = f"size:{member.info.size}"
            pad = _blocks(member.info.size) - member.info.size
            if pad:
                sent += pad
                yield bytes(pad)
        yield bytes(self.size - sent)  # end-of-archive blocks and record padding


def _raise(exc: OSError) -> None:
    raise exc


def _blocks(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _read_exact(path: str, offset: int, length: int, changed: list[str]) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, zero-padded (and ``path`` added to
    ``changed``) if the file got shorter."""
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            data = f.read(min(CHUNK, left))
            if not data:
                changed.append(path)
                data = bytes(min(CHUNK, left))
            left -= len(data)
            yield data


class TarExtractor:
    """Extracts a tar stream fed in pieces from the event loop, in a thread.

    Uses :mod:`tarfile`'s ``tar`` extraction filter (no absolute names, nothing
    outside ``dest``, no device files or set-id bits); ownership is the local user's.
    """

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._buf = b""
        self._eof = False
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._extract, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        if self.error is None and data:
            self._queue.put(data)

    def read(self, size: int = -1) -> bytes:  # called by tarfile, in the thread
        while not self._eof and (size < 0 or len(self._buf) < size):
            item = self._queue.get()
            if item is None:
                self._eof = True
            else:
                self._buf += item
        if size < 0:
            size = len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def _extract(self) -> None:
        try:
            with tarfile.open(fileobj=self, mode="r|") as archive:  # type: ignore[call-overload]
                if hasattr(tarfile, "tar_filter"):
                    archive.extractall(self.dest, filter=_owned_filter)
                else:  # Python < 3.10.12 / 3.11.4
                    for member in archive:
                        _check_member(member)
                        archive.extract(member, self.dest)
        except BaseException as exc:  # reported by close()
            self.error = exc
        while not self._eof:  # let the writer finish
            if self._queue.get() is None:
                self._eof = True

    def close(self) -> None:
        """Wait for the extraction to end.

        Raises:
            UserError: the stream could not be extracted.
        """
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self.error is not None:
            raise UserError(f"cannot extract the directory: {self.error}")


def _owned_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    member = tarfile.tar_filter(member, path)
    return member.replace(uid=os.getuid(), gid=os.getgid(), uname="", gname="",
                          deep=False) if hasattr(os, "getuid") else member


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or not (
            member.isreg() or member.isdir() or member.issym()):
        raise tarfile.TarError(f"refusing to extract {name!r}")


# ------------------------------------------------------------------------- transfers


@dataclass
class _Run:
    """Shared state of one copy."""

    remote: Remote
    progress: Progress
    parallel: int
    verified: str = ""


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


class _Download:
    """The local side of a download: header handling, the temporary file or
    directory next to the destination, parts, verification."""

    def __init__(self, run: _Run, spec: RemotePath, dest: str) -> None:
        self.run = run
        self.spec = spec
        self.dest = dest
        self.kind = ""
        self.final = ""
        self.temp = ""
        self.fd = -1
        self.size = 0
        self.part = 0
        self.executable = False
        self.manifest_kind = ""
        self.extractor: TarExtractor | None = None
        self.merge = False
        self.digest = hashlib.sha256()
        self.hash_inline = True
        self.received = 0
        self.tasks: list[asyncio.Task[Any]] = []

    def _target(self) -> str:
        name = _remote_name(self.spec.path)
        if os.path.isdir(self.dest):
            return os.path.join(self.dest, name) if name else self.dest
        if self.dest.endswith(("/", os.sep)):
            raise UserError(f"{self.dest}: no such directory")
        return self.dest

    def on_header(self, line: str) -> None:
        fields = line.split()
        self.final = self._target()
        parent = os.path.dirname(os.path.abspath(self.final))
        if not os.path.isdir(parent):
            raise UserError(f"{parent}: no such directory")
        if fields[0] == "D":
            self.kind = "dir"
            self.manifest_kind = fields[1] if len(fields) > 1 else "sha256"
            if os.path.isdir(self.final):
                self.merge = True
                root = self.final
            elif os.path.exists(self.final):
                raise UserError(f"{self.final}: cannot overwrite a non-directory with a "
                                "directory")
            else:
                root = self.temp = tempfile.mkdtemp(
                    dir=parent, prefix=f".{os.path.basename(self.final)}.",
                    suffix=".ssmshell-part")
            self.extractor = TarExtractor(root)
            return
        if os.path.isdir(self.final):
            raise UserError(f"{self.final}: is a directory")
        self.kind = "file"
        try:
            self.size, self.part = int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            raise UserError(f"{self.spec.target}: bad header from the remote copy script: "
                            f"{line[:80]!r}", Exit.PROTOCOL) from None
        if not 0 <= self.part <= self.size:
            raise UserError(f"{self.spec.target}: bad header from the remote copy script: "
                            f"{line[:80]!r}", Exit.PROTOCOL)
        self.executable = len(fields) > 3 and fields[3] == "x"
        self.run.progress.total = self.size
        self.fd, self.temp = tempfile.mkstemp(
            dir=parent, prefix=f".{os.path.basename(self.final)}.", suffix=".ssmshell-part")
        if self.part < self.size:
            self.hash_inline = False
            os.ftruncate(self.fd, self.size)
            rest = self.size - self.part
            step = -(-rest // max(1, self.run.parallel - 1))
            for index, offset in enumerate(range(self.part, self.size, step), 1):
                length = min(step, self.size - offset)
                self.tasks.append(asyncio.get_running_loop().create_task(
                    self._part(index, offset, length)))

    def write(self, data: bytes) -> None:
        """Body bytes of session 0: the file's first part, or the tar stream."""
        if self.extractor is not None:
            self.extractor.write(data)
        else:
            self._write_at(self.received, data)
            if self.hash_inline:
                self.digest.update(data)
        self.received += len(data)
        self.run.progress.add(len(data))

    def _write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            view = view[written:]
            offset += written

    async def _part(self, index: int, offset: int, length: int) -> None:
        got = 0

        def sink(data: bytes) -> None:
            nonlocal got
            if got + len(data) > length:
                raise UserError(f"{self.spec.text}: changed while being copied")
            self._write_at(offset + got, data)
            got += len(data)
            self.run.progress.add(len(data))

        token = _token()
        text = script(_DOWNLOAD_PART, token, P=remote_path_expr(self.spec.path),
                      O=offset + 1, L=length)
        trailer = await self.run.remote.run(text, ScriptOutput(token, sink=sink, header=False))
        if trailer.status:
            raise self.run.remote.fail(trailer)
        if got != length:
            raise UserError(f"{self.spec.text}: changed while being copied (part {index}: "
                            f"{got} of {length} bytes)")

    def finish(self, trailer: Trailer, manifest: list[bytes]) -> None:
        """Verify and move into place.

        Raises:
            UserError: a mismatch (the temporary file or directory is left for
                :meth:`discard`).
        """
        if self.kind == "dir":
            assert self.extractor is not None
            self.extractor.close()
            sent = parse_manifest(self.manifest_kind, manifest)
            root = self.final if self.merge else self.temp
            received = local_manifest(root, self.manifest_kind)
            problems = compare_manifests(sent, received)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise UserError(f"checksum mismatch copying {self.spec.text}: "
                                f"{problems[0]}{more}")
            self.run.verified = (f"{len(sent)} files, SHA-256 verified"
                                 if self.manifest_kind == "sha256"
                                 else f"{len(sent)} files, {SIZES_ONLY}")
            if not self.merge:
                os.replace(self.temp, self.final)
                self.temp = ""
            return
        if self.received != self.part:
            raise UserError(f"{self.spec.text}: changed while being copied "
                            f"({self.received} of {self.part} bytes)")
        if trailer.digest.startswith("sha256:"):
            local = "sha256:" + (self.digest.hexdigest() if self.hash_inline
                                 else file_digest(self.temp)[len("sha256:"):])
            self.run.verified = "SHA-256 verified"
        else:
            local = f"size:{os.fstat(self.fd).st_size}"
            self.run.verified = SIZES_ONLY
        check_digest(trailer.digest, local, self.spec.text)
        os.close(self.fd)
        self.fd = -1
        mode = 0o666 | (0o111 if self.executable else 0)
        if os.path.isfile(self.final):
            mode = stat.S_IMODE(os.stat(self.final).st_mode)
        else:
            mode &= ~_umask()
        os.chmod(self.temp, mode)
        os.replace(self.temp, self.final)
        self.temp = ""

    def discard(self) -> None:
        if self.extractor is not None:
            with contextlib.suppress(UserError):
                self.extractor.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.temp:
            if os.path.isdir(self.temp):
                shutil.rmtree(self.temp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(self.temp)


async def download(run: _Run, spec: RemotePath, dest: str) -> None:
    """Copy ``spec`` (a file or directory) to the local ``dest``."""
    dl = _Download(run, spec, dest)
    token = _token()
    output = ScriptOutput(token, on_header=dl.on_header, sink=dl.write)
    text = script(_DOWNLOAD, token, P=remote_path_expr(spec.path), N=run.parallel,
                  M=PARALLEL_MIN, B=HEAD_START)

    async def first() -> Trailer:
        return await run.remote.run(text, output)

    main = asyncio.get_running_loop().create_task(first())
    dl.tasks.append(main)  # the header handler appends the other parts' sessions
    try:
        await _all(dl.tasks)
        trailer = main.result()
        if trailer.status:
            raise run.remote.fail(trailer)
        if not dl.kind:
            raise UserError(f"{spec.text}: the remote copy script sent no header")
        dl.finish(trailer, output.manifest)
    finally:
        dl.discard()


async def upload(run: _Run, src: str, spec: RemotePath) -> None:
    """Copy the local ``src`` (a file or directory) to ``spec``."""
    if os.path.isdir(src):
        await _upload_dir(run, src, spec)
    else:
        await _upload_file(run, src, spec)


async def _upload_file(run: _Run, src: str, spec: RemotePath) -> None:
    st = os.stat(src)
    size = st.st_size
    parts = run.parallel if size >= PARALLEL_MIN and run.parallel > 1 else 1
    length = -(-size // parts) if size else 0
    ranges = [(offset, min(length, size - offset)) for offset in range(0, size, length)] \
        if length else [(0, 0)]
    whole, part_digests = await asyncio.to_thread(_digests, src, ranges)
    run.progress.total = size
    must_dir = '[ -d "$P" ] || d 2 - "no such directory"\n' if spec.path.endswith("/") else ""
    common = {"P": remote_path_expr(spec.path), "B": shlex.quote(_local_name(src)),
              "R": secrets.token_hex(4), "X": f"{stat.S_IMODE(st.st_mode):o}",
              "MUSTDIR": must_dir}
    changed: list[str] = []
    sent = [hashlib.sha256() for _ in ranges]

    def feed(index: int) -> Feed:
        offset, count = ranges[index]

        def chunks() -> Iterator[bytes]:
            for chunk in _read_exact(src, offset, count, changed):
                sent[index].update(chunk)
                yield chunk

        return Feed(count, chunks)

    async def session(index: int, template: str, **values: str | int) -> Trailer:
        token = _token()
        text = script(_UPLOAD_DEST + template, token, **common, **values)
        trailer = await run.remote.run(text, ScriptOutput(token), feed(index), run.progress)
        if trailer.status:
            if changed:
                raise UserError(f"{src}: changed while being copied")
            if trailer.status == 7 and trailer.digest:
                of_part = len(ranges) > 1 and "part" in trailer.message
                sent_digest, count = (part_digests[index], ranges[index][1]) if of_part \
                    else (whole, size)
                expected = sent_digest if trailer.digest.startswith("sha256:") \
                    else f"size:{count}"
                part = f" (part {index})" if of_part else ""
                raise UserError(f"checksum mismatch for {spec.text}{part}: sent "
                                f"{_show(expected)}, received {_show(trailer.digest)}; "
                                "the copy was removed")
            raise run.remote.fail(trailer)
        return trailer

    try:
        if len(ranges) == 1:
            final = await session(0, _UPLOAD_FILE, W=shlex.quote(whole), Z=f"size:{size}")
        else:
            others = " ".join(str(k) for k in range(1, len(ranges)))
            paths = " ".join(f'"$T.{k}"' for k in range(len(ranges)))
            tasks = [asyncio.get_running_loop().create_task(session(
                k, _UPLOAD_PART + (_UPLOAD_ASSEMBLE if k == 0 else 'd 0 "$g"\n'),
                k=k, W=shlex.quote(part_digests[k]), Z=f"size:{ranges[k][1]}",
                WA=shlex.quote(whole), ZA=f"size:{size}", OTHERS=others, PARTS=paths))
                for k in range(len(ranges))]
            await _all(tasks)
            final = tasks[0].result()
    except (UserError, ChannelError, ConnectError):
        if len(ranges) > 1:
            await _cleanup(run, common)
        raise
    if changed or any("sha256:" + h.hexdigest() != d
                      for h, d in zip(sent, part_digests, strict=True)):
        raise UserError(f"{src}: changed while being copied")
    if final.digest.startswith("sha256:"):
        check_digest(whole, final.digest, src)
        run.verified = "SHA-256 verified"
    else:
        check_digest(f"size:{size}", final.digest, src)
        run.verified = SIZES_ONLY


async def _cleanup(run: _Run, common: dict[str, str]) -> None:
    """Remove the parts of a failed parallel upload, best effort."""
    token = _token()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(run.remote.run(
            script(_UPLOAD_DEST + _UPLOAD_CLEANUP, token, **common), ScriptOutput(token)),
            CLEANUP_TIMEOUT)


def _digests(path: str, ranges: list[tuple[int, int]]) -> tuple[str, list[str]]:
    """SHA-256 of the whole file and of each range (contiguous, in order)."""
    whole = hashlib.sha256()
    parts = []
    with open(path, "rb") as f:
        for _offset, count in ranges:
            part = hashlib.sha256()
            left = count
            while left:
                data = f.read(min(1 << 20, left))
                if not data:
                    break
                whole.update(data)
                part.update(data)
                left -= len(data)
            parts.append("sha256:" + part.hexdigest())
    return "sha256:" + whole.hexdigest(), parts


async def _upload_dir(run: _Run, src: str, spec: RemotePath) -> None:
    plan = await asyncio.to_thread(TarPlan.of, src, run.progress.notice)
    run.progress.total = plan.size
    token = _token()
    output = ScriptOutput(token)
    text = script(_UPLOAD_DIR, token, P=remote_path_expr(spec.path),
                  B=shlex.quote(_local_name(src)))
    trailer = await run.remote.run(text, output, Feed(plan.size, plan.chunks), run.progress)
    if trailer.status:
        raise run.remote.fail(trailer)
    if plan.changed:
        raise UserError(f"{plan.changed[0]}: changed while being copied")
    kind = "size" if output.header == "D size" else "sha256"
    received = parse_manifest(kind, output.manifest)
    problems = compare_manifests(plan.sizes if kind == "size" else plan.sent, received)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"checksum mismatch copying {src} to {spec.text}: {problems[0]}{more}")
    run.verified = f"{len(plan.sent)} files, " + (
        SIZES_ONLY if kind == "size" else "SHA-256 verified")


# ---------------------------------------------------------------------------- entry


def copy(aws: Aws, src: Spec, dest: Spec, *, resolve: Callable[[str], Any],
         parallel: int | None = None, options: ChannelOptions | None = None,
         progress: bool | None = None) -> None:
    """``ssmshell cp SRC DEST``.

    Args:
        aws: the AWS clients.
        src, dest: from :func:`parse_spec`; exactly one must be remote.
        resolve: ``TARGET`` (an instance or ``ecs:…``) → instance id or EcsTarget.
        parallel: sessions for one large file (1 = no splitting); None: downloads
            use :data:`DEFAULT_PARALLEL`, uploads one session (the agent does not pace
            input, and parallel uploads were measured no faster: bench/cp.py).
        options: channel options.
        progress: show the progress line (default: when stderr is a terminal).

    Raises:
        UserError: usage errors, missing files, failed sessions, checksum mismatches.
    """
    if isinstance(src, LocalPath) and isinstance(dest, LocalPath):
        raise UserError("neither SRC nor DEST is remote: one of them must be "
                        "TARGET:PATH or ecs:CLUSTER/TASK[/CONTAINER]:PATH", Exit.USAGE)
    if isinstance(src, RemotePath) and isinstance(dest, RemotePath):
        raise UserError("copying between two remote paths is not supported: copy "
                        "through a local file", Exit.USAGE)
    if parallel is None:
        parallel = 1 if isinstance(dest, RemotePath) else DEFAULT_PARALLEL
    if not 1 <= parallel <= MAX_PARALLEL:
        raise UserError(f"--parallel must be 1-{MAX_PARALLEL}", Exit.USAGE)
    if isinstance(src, LocalPath):
        if not os.path.exists(src.path):
            raise UserError(f"{src.path}: no such file or directory")
        if not (os.path.isfile(src.path) or os.path.isdir(src.path)):
            raise UserError(f"{src.path}: not a regular file or directory")
        if not os.access(src.path, os.R_OK):
            raise UserError(f"{src.path}: permission denied")
    remote_spec = dest if isinstance(dest, RemotePath) else src
    assert isinstance(remote_spec, RemotePath)
    target = resolve(remote_spec.target)
    for service in ("ssm", "kms"):  # boto3 clients are created lazily, not thread-safely
        aws.client(service)
    if not isinstance(target, str):
        aws.client("ecs")
    remote = Remote(aws, remote_spec, target, options)
    enabled = sys.stderr.isatty() if progress is None else progress
    label = "upload" if isinstance(dest, RemotePath) else "download"
    run = _Run(remote, Progress(enabled, label), parallel)
    if isinstance(src, LocalPath):
        assert isinstance(dest, RemotePath)
        body: Coroutine[Any, Any, None] = upload(run, src.path, dest)
    else:
        assert isinstance(dest, LocalPath)
        body = download(run, src, dest.path)
    try:
        asyncio.run(_main(body))
    except BaseException:
        run.progress.clear()
        raise
    if run.verified.endswith(SIZES_ONLY) and not run.progress.enabled:
        notice("the target has no sha256sum: only sizes were compared")
    run.progress.finish(run.verified)


async def _main(body: Coroutine[Any, Any, None]) -> None:
    """Run ``body`` under :func:`~ssmshell.runner.guarded` (SIGTERM/SIGHUP end it,
    channel failures become one line); local I/O errors become one line too."""

    async def run() -> int:
        try:
            await body
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise UserError(f"{where}{exc.strerror or exc}") from None
        return 0

    await guarded(run())
