"""`python -m tracker.bench_map --worker | --feed-worker`: the worker processes `tracker bench map` starts."""

import asyncio
import sys

from tracker.bench_map.feed import _feed_worker
from tracker.bench_map.load_generator import _worker
from tracker.bench_map.workers import _FEED_FLAG, _WORKER_FLAG

if sys.argv[1:] == [_WORKER_FLAG]:
    asyncio.run(_worker())
elif sys.argv[1:] == [_FEED_FLAG]:
    asyncio.run(_feed_worker())
else:
    sys.exit("tracker.bench_map is run by `tracker bench map`")
