"""Launch → StartSession answered, by credential source, against the local Session Manager.

Run: ``.venv/bin/python bench/credentials.py [--runs 5]`` (about 15 s).

Each run is a fresh interpreter (as a CLI launch is) that imports ``ssmshell.cli``
and makes the StartSession call the way ``ssmshell start-session`` does, then
prints ``time.monotonic()`` (comparable across processes) and its peak RSS. The
local Session Manager runs in this process's thread. Credential sources:

* ``env``: static keys in the environment;
* ``profile``: static keys in a profile of the shared credentials file;
* ``process``: a ``credential_process`` profile (a small Python script: about
  40 ms of the figure is that interpreter starting);

each through ssmshell's own signing (:mod:`ssmshell.aws.fastpath`) and, for
comparison, through a boto3 client (forced by setting ``HTTPS_PROXY``, which the
local endpoint's ``http://`` URL does not use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import resource, sys, time
import ssmshell.cli
from ssmshell.aws.api import Aws
aws = Aws(sys.argv[1] or None, None, None)
info = aws.start_session("i-0123456789abcdef0")
done = time.monotonic()
aws.call("ssm", "terminate_session", "ssm:TerminateSession", SessionId=info.session_id)
print(done, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, sorted(aws._clients))
"""
PROCESS = """import json, sys
print(json.dumps({"Version": 1, "AccessKeyId": sys.argv[1], "SecretAccessKey": sys.argv[2]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from ssmshell.local.server import LocalSessionManager

    sm = LocalSessionManager()
    sm.start_in_thread()
    home = Path(tempfile.mkdtemp(prefix="ssmshell-bench-creds-"))
    env_keys = sm.client_env()
    key, secret = env_keys["AWS_ACCESS_KEY_ID"], env_keys["AWS_SECRET_ACCESS_KEY"]
    (home / "creds.py").write_text(PROCESS)
    (home / "config").write_text(
        f"[profile static]\nregion = {sm.region}\n[profile process]\nregion = {sm.region}\n"
        f"credential_process = {sys.executable} {home / 'creds.py'} {key} {secret}\n")
    (home / "credentials").write_text(
        f"[static]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    base.update(HOME=str(home), AWS_CONFIG_FILE=str(home / "config"),
                AWS_SHARED_CREDENTIALS_FILE=str(home / "credentials"),
                AWS_ENDPOINT_URL=sm.endpoint_url)
    setups = {"env": ("", {**env_keys}), "profile": ("static", {}),
              "process": ("process", {})}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.runs} runs each, "
          "median; launch → StartSession answered, peak RSS of the child")
    try:
        results: dict[tuple[str, str], tuple[float, float, list[str]]] = {}
        for name, (profile, extra) in setups.items():
            for path, more in (("ssmshell signs", {}),
                               ("boto3 client", {"HTTPS_PROXY": "http://127.0.0.1:9"})):
                env = {**base, **extra, **more}
                times, rss, clients = [], [], []
                for _ in range(args.runs + 1):  # the first run warms the caches
                    launch = time.monotonic()
                    out = subprocess.run([sys.executable, "-c", CHILD, profile], env=env,
                                         capture_output=True, text=True, check=True).stdout
                    done, mb, made = out.split(maxsplit=2)
                    times.append(float(done) - launch)
                    rss.append(float(mb))
                    clients = json.loads(made.replace("'", '"'))
                results[name, path] = (statistics.median(times[1:]),
                                       statistics.median(rss[1:]), clients)
                t, mb, made = results[name, path]
                print(f"  {name:8s} {path:15s} {t * 1000:6.0f} ms  {mb:5.1f} MB  "
                      f"boto3 clients made: {', '.join(made) or 'none'}", flush=True)
        for name in setups:
            fast, slow = results[name, "ssmshell signs"], results[name, "boto3 client"]
            print(f"  {name:8s} ssmshell signing / boto3 client: time {fast[0] / slow[0]:.2f}x, "
                  f"RSS {fast[1] / slow[1]:.2f}x")
    finally:
        sm.stop_thread()


if __name__ == "__main__":
    main()
