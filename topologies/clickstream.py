"""Clickstream: page views → sessions per user → conversions per campaign per 5 minutes.

Page views arrive keyed by user, with their event time in ``at`` (epoch ms) and the campaign
that brought the user. Three stages, each exactly once:

1. **Sessions per user** (session windows, 30 minutes of inactivity, 1 minute of grace): each
   closed session is emitted once with its page count, its campaign and whether it reached the
   checkout. Views that arrive after their session closed go to the dead-letter topic.
2. **Conversions per campaign per 5 minutes** (hopping windows advancing by 1 minute): the
   converted sessions, re-keyed by campaign, counted by the time the session ended.
3. **Joined with the campaigns table**: each closed window's count with the campaign's name and
   budget, published to ``campaign-conversions`` keyed by campaign.

Run it (a broker from ``streamflow dev kafka start`` or your own):

    streamflow run topologies/clickstream.py --state-dir .state/c1

``idle_close`` on both windowed stages closes windows on a partition that has gone quiet, so the
last sessions of a day do not wait for tomorrow's first view.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from streamflow import App, Windowed, hopping, session
from streamflow.serde.base import STR
from streamflow.topology.windows import windowed_serde

CHECKOUT = "/checkout/done"

app = App("clickstream")

views = app.topic("page-views", key="str", value="json", partitions=6)
campaigns = app.topic("campaigns", key="str", value="json", partitions=6)
sessions_out = app.topic("user-sessions", key=windowed_serde(STR), value="json", partitions=6)
conversions_out = app.topic("campaign-conversions", key="str", value="json", partitions=6)


def new_session() -> dict[str, Any]:
    return {"pages": 0, "campaign": None, "converted": False}


def add_view(session: dict[str, Any], view: dict[str, Any]) -> dict[str, Any]:
    return {
        "pages": session["pages"] + 1,
        # The campaign that brought the user in: the first view's that names one.
        "campaign": session["campaign"] or view.get("campaign"),
        "converted": session["converted"] or view["page"] == CHECKOUT,
    }


def merge_sessions(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A view that fills the gap between two sessions joins them."""
    return {
        "pages": a["pages"] + b["pages"],
        "campaign": a["campaign"] or b["campaign"],
        "converted": a["converted"] or b["converted"],
    }


def conversion_row(window: Windowed, conversions: int) -> dict[str, Any]:
    return {"start": window.start, "end": window.end, "conversions": conversions}


def with_campaign(row: dict[str, Any], campaign: dict[str, Any] | None) -> dict[str, Any]:
    """Left join: a campaign missing from the table is reported, not dropped."""
    known = campaign or {}
    return {**row, "name": known.get("name"), "budget_cents": known.get("budget_cents")}


campaign_table = app.table(campaigns)

user_sessions = (
    app.stream(views, timestamp="at")
    .window(
        session(timedelta(minutes=30), grace=timedelta(minutes=1)),
        idle_close=timedelta(minutes=2),
    )
    .aggregate(
        "sessions",
        initial=new_session,
        fn=add_view,
        merge=merge_sessions,
        emit="close",
    )
)
user_sessions.to(sessions_out)

(
    user_sessions.filter(lambda s: s["converted"] and s["campaign"] is not None)
    .key_by(lambda s: s["campaign"], key="str", name="by-campaign")
    # Grace covers the disorder the session stage makes: a session is emitted when its own
    # partition's stream time passes its end + 31 minutes, and partitions get there at different
    # moments (at the end of input, each closes all it has as it goes quiet).
    .window(
        hopping(timedelta(minutes=5), timedelta(minutes=1), grace=timedelta(minutes=35)),
        idle_close=timedelta(minutes=2),
    )
    .count("conversions-5m", emit="close")
    .map(conversion_row, with_key=True)
    .key_by(lambda window, row: window.key, with_key=True, key="str", name="campaign-rows")
    .join(campaign_table, with_campaign, how="left")
    .to(conversions_out)
)
