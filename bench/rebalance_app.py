"""The app of ``bench/rebalance_bench.py``: a keyed count whose names come from the environment
(``SF_BENCH_APP``, ``SF_BENCH_INPUT``, ``SF_BENCH_OUTPUT``); protocol, standbys and the HTTP
port are ``streamflow run`` options (set through their environment variables)."""

from __future__ import annotations

import os

from streamflow import App

app = App(os.environ["SF_BENCH_APP"])
source = app.topic(os.environ["SF_BENCH_INPUT"], key="str", value="json")
counts = app.topic(os.environ["SF_BENCH_OUTPUT"], key="str", value="json")
app.stream(source).count("counts").to(counts)
