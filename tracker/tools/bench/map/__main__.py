"""`python -m tracker.tools.bench.map --worker | --feed-worker`: the processes `tracker bench map` starts."""

import asyncio
import sys

from tracker.tools.bench.map.feed import feed_worker
from tracker.tools.bench.map.load_generator import load_generator_worker
from tracker.tools.bench.map.sources import FEED_FLAG, WORKER_FLAG

if sys.argv[1:] == [WORKER_FLAG]:
    asyncio.run(load_generator_worker())
elif sys.argv[1:] == [FEED_FLAG]:
    asyncio.run(feed_worker())
else:
    sys.exit("tracker.tools.bench.map is run by `tracker bench map`")
