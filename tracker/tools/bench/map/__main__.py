"""`python -m tracker.tools.bench.map --worker | --feed-worker`: the processes `tracker bench map` starts."""

import asyncio
import sys

from tracker.tools.bench.map.feed import _feed_worker
from tracker.tools.bench.map.load_generator import _worker
from tracker.tools.bench.map.workers import _FEED_FLAG, _WORKER_FLAG

if sys.argv[1:] == [_WORKER_FLAG]:
    asyncio.run(_worker())
elif sys.argv[1:] == [_FEED_FLAG]:
    asyncio.run(_feed_worker())
else:
    sys.exit("tracker.tools.bench.map is run by `tracker bench map`")
