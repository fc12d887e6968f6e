"""Port-forward throughput each way, one session and several in parallel, against the
local agent emulator at its real pacing (one 1 KiB read per millisecond, like the
real agent) or with pacing off (``--no-pacing``).

Run: ``.venv/bin/python bench/ports.py [--mb 20] [--parallel 4]``. Upload is
client → agent: the official client paces itself to one 1 KiB message per ms
(about 0.7 MB/s against the real agent); issue 5 asks for at least 3× that.
Download is capped by the agent's own pacing; ssmshell must keep up.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import resource
import time

from ssmshell.aws.api import Aws, SessionInfo
from ssmshell.local.agent import AgentOptions
from ssmshell.local.server import LocalSessionManager
from ssmshell.runner import make_channel
from ssmshell.sessions.ports import Listen, PortSession

OFFICIAL_UPLOAD = 0.7  # MB/s, the official client against the real agent (issue 5)


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def transfer(sm: LocalSessionManager, aws: Aws, size: int, upload: bool) -> float:
    """Move ``size`` bytes through one forward; returns seconds."""
    data = os.urandom(size)
    done = asyncio.Event()
    digest = hashlib.sha256()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if upload:
            while chunk := await reader.read(1 << 16):
                digest.update(chunk)
        else:
            writer.write(data)
            await writer.drain()
        writer.close()
        done.set()

    srv = await asyncio.start_server(server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    out = await asyncio.to_thread(
        lambda: aws.client("ssm").start_session(
            Target="i-0123456789abcdef0", DocumentName="AWS-StartPortForwardingSession",
            Parameters={"portNumber": [str(port)]}))
    info = SessionInfo(out["SessionId"], out["StreamUrl"], out["TokenValue"],
                       "i-0123456789abcdef0")
    bound: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    session = PortSession(make_channel(aws, info), Listen("127.0.0.1", 0),
                          on_ready=bound.set_result)
    task = asyncio.create_task(session.run())
    local_port = int((await bound).rsplit(":", 1)[1])
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", local_port)
    if upload:
        for offset in range(0, size, 1 << 16):
            writer.write(data[offset:offset + (1 << 16)])
            await writer.drain()
        writer.close()
        await done.wait()
        ok = digest.digest() == hashlib.sha256(data).digest()
    else:
        got = hashlib.sha256()
        received = 0
        while received < size:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            got.update(chunk)
            received += len(chunk)
        ok = got.digest() == hashlib.sha256(data).digest()
        writer.close()
    elapsed = time.perf_counter() - started
    await session.terminate()
    task.cancel()
    srv.close()
    if not ok:
        raise SystemExit("data mismatch")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--no-pacing", action="store_true")
    args = parser.parse_args()
    options = AgentOptions(pacing=0.0) if args.no_pacing else AgentOptions()
    sm = LocalSessionManager(agent_options=options)
    sm.start_in_thread()
    os.environ.update(sm.client_env())
    aws = Aws(region=sm.region, endpoint_url=sm.endpoint_url)
    size = int(args.mb * 1_000_000)
    print(f"agent pacing: {'off' if args.no_pacing else f'{options.pacing * 1000:.0f} ms/read'}")
    try:
        for upload in (True, False):
            for parallel in (1, args.parallel):
                cpu0 = cpu()

                async def many(parallel: int = parallel, upload: bool = upload) -> list[float]:
                    return await asyncio.gather(*(transfer(sm, aws, size // parallel, upload)
                                                  for _ in range(parallel)))

                started = time.perf_counter()
                asyncio.run(many())
                wall = time.perf_counter() - started
                rate = size / wall / 1e6
                used = cpu() - cpu0
                extra = (f"  {rate / OFFICIAL_UPLOAD:.1f}x the official client's upload"
                         if upload else "")
                print(f"{'upload  ' if upload else 'download'} {parallel} session(s): "
                      f"{rate:6.2f} MB/s  (CPU, both sides of this process: "
                      f"{used / (size / 1e6) * 1000:.0f} ms per MB){extra}")
    finally:
        sm.stop_thread()


if __name__ == "__main__":
    main()
