"""`python -m tracker.tools.bench.ingest --worker`: the load generator `tracker bench ingest` starts."""

import sys

from tracker.tools.bench.ingest.load import WORKER_FLAG, worker_main

if sys.argv[1:] != [WORKER_FLAG]:
    sys.exit("tracker.tools.bench.ingest is run by `tracker bench ingest`")
worker_main()
