"""A workflow shipped in two versions, for the rolling-upgrade test.

``UPGRADE_VERSIONS`` says which versions this process registers ("1", or "1,2"): the old
deploy and the new one. Each instance sleeps between two steps, so instances of both
versions are in flight while workers of both deploys share the group.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

from streamflow import App

app = App(os.environ.get("UPGRADE_APP", "upgrade"))
VERSIONS = {int(v) for v in os.environ.get("UPGRADE_VERSIONS", "1,2").split(",")}


@app.step
def stamp(ctx, text: str) -> str:
    time.sleep(0.01)
    return text


if 1 in VERSIONS:

    @app.workflow(name="order", version=1)
    async def order_v1(ctx, n: int) -> str:
        first = await ctx.step(stamp, f"v1-{n}")
        await ctx.sleep(timedelta(seconds=3))
        return await ctx.step(stamp, f"{first}-done")


if 2 in VERSIONS:

    @app.workflow(name="order", version=2)
    async def order_v2(ctx, n: int) -> str:
        first = await ctx.step(stamp, f"v2-{n}")
        await ctx.sleep(timedelta(seconds=3))
        second = await ctx.step(stamp, f"{first}-checked")
        return await ctx.step(stamp, f"{second}-done")
