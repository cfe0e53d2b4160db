"""F2 freshness under reads: F1 while R1's 32 readers read the screens being watched from the same API.

The realistic case of F1: the screen being watched is being read. Everything is F1's (bench/f1_freshness.py: the
processes, the stream at 1,000 events/s, the sampled events and their watchers, the stage split), and meanwhile
R1's load generator (bench.loadgen, its own process; READERS closed-loop connections) asks for the gateway's batch
screen (R1's query) of the batches whose samples are being watched (one or two at a time), in turn; as a watch
begins or ends, the readers move on to the batches watched then. So the set they read is narrow whatever the
machine, as R1's one screen is: each screen is evicted whenever a transaction changes its batch and read many times
in between, so most reader requests are cache hits and the rest the misses that follow an eviction, and the
watcher's answer competes with reads of the very screen it waits on. (wrk cannot be told what to read while it
runs, so F2 always uses bench.loadgen.) Reported as F1 is, plus the readers' rate and latency; target p99 < 100 ms.
"""

from __future__ import annotations

from bench.common import Context, Result
from bench.f1_freshness import measure
from bench.r1_cached import CONNECTIONS

NAME = "F2"
TITLE = "freshness under reads: F1 while R1's 32 readers ask the same API for the screens being watched"
READERS = CONNECTIONS


async def run(ctx: Context) -> Result:
    return await measure(ctx, Result(NAME, TITLE), readers=READERS)
