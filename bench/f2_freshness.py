"""F2 freshness under reads: F1 while R1's 32 readers load the same API.

The realistic case of F1: the screen being watched is being read. Everything is F1's (bench/f1_freshness.py: the
processes, the stream at 1,000 events/s, the sampled events and their watchers, the stage split), and meanwhile
R1's load generator (wrk, or bench.loadgen without it; READERS closed-loop connections) asks for the gateway's
batch screen (R1's query) of the stream's batches, each request the next batch in turn: screens of batches already
complete (mostly cache hits), of batches being written (their entries evicted as events arrive) and of batches not
registered yet. Reported as F1 is, plus the readers' rate and latency; target p99 < 100 ms.
"""

from __future__ import annotations

from bench.common import Context, Result
from bench.f1_freshness import measure
from bench.r1_cached import CONNECTIONS

NAME = "F2"
TITLE = "freshness under reads: F1 while R1's 32 readers ask the same API for batch screens"
READERS = CONNECTIONS


async def run(ctx: Context) -> Result:
    return await measure(ctx, Result(NAME, TITLE), readers=READERS)
