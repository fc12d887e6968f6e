"""Version comparisons used for feature gating (PROTOCOL.md §11).

The agent and the plugin compare differently, and both rules matter: the
client decides smux with the plugin's rule on AgentVersion, the agent with its
own rule on ClientVersion, and they must agree (§10.2).
"""

from __future__ import annotations

import re

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def agent_compare(a: str, b: str) -> int:
    """The agent's ``versionutil.Compare`` in strict mode (§11.1): -1, 0 or 1.

    Semver ordering if both are three-part versions; otherwise component-wise,
    numerically where both components are integers, as strings otherwise, and
    the string with more components wins a tie (``1.1.70.0`` > ``1.1.70``).
    """
    if _SEMVER.match(a) and _SEMVER.match(b):
        ka = tuple(int(x) for x in a.split("."))
        kb = tuple(int(x) for x in b.split("."))
        return (ka > kb) - (ka < kb)
    pa, pb = a.split("."), b.split(".")
    for x, y in zip(pa, pb, strict=False):
        if x.isdigit() and y.isdigit():
            ix, iy = int(x), int(y)
            if ix != iy:
                return 1 if ix > iy else -1
        elif x != y:
            return 1 if x > y else -1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


def plugin_greater(a: str, b: str) -> bool:
    """The plugin's rule (§11.2): True only if both have the same number of integer
    components and ``a`` is strictly greater; anything unparsable is "not supported"."""
    pa, pb = a.split("."), b.split(".")
    if len(pa) != len(pb) or not all(x.isdigit() for x in pa + pb):
        return False
    return tuple(int(x) for x in pa) > tuple(int(x) for x in pb)


#: §11.2 / §14.1 thresholds on AgentVersion (plugin rule).
TERMINATE_SESSION_FLAG_AFTER = "2.3.722.0"
TCP_MULTIPLEXING_AFTER = "3.0.196.0"
SMUX_KEEPALIVE_DISABLED_AFTER = "3.1.1511.0"
#: §11.1 thresholds on ClientVersion (agent rule).
MUX_SUPPORTED_CLIENT_VERSION = "1.1.70"
MUX_KEEPALIVE_DISABLED_AFTER_CLIENT = "1.2.331.0"
