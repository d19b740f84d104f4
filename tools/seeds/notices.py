"""Demo notices for `make run`: two published notices in the demo district (see
``tools.demo_data``) — anti-fraud legal publicity for its elderly residents living alone, and a
volunteer call-out for one street — delivered through the stub channels. Idempotent: skipped when
the district already has published notices.

    python -m tools.seeds.notices
"""

import datetime as dt
import os

from tools.demo_seed import Stopwatch, district_to_seed, proxy, say


def notices_for(district_id, street_id, street_name):
    week = (dt.datetime.now(dt.UTC) + dt.timedelta(days=7)).replace(microsecond=0).isoformat()
    return [
        {
            "title": "防范养老诈骗提醒",
            "category": "legal_publicity",
            "severity": "moderate",
            "urgency": "expected",
            "body": "近期有不法分子以“保健品”“以房养老”等名义诈骗老年人。陌生来电谈钱、要求转账的，请先给子女"
            "或网格员打电话。如有疑问，可到街道公共法律服务工作站免费咨询。",
            "audience": {"under": [district_id], "tags_any": ["elderly_alone"]},
            "channels": ["sms", "voice_call"],
            "requires_ack": True,
            "ack_deadline": week,
        },
        {
            "title": f"{street_name}志愿者招募：党员先锋岗值守",
            "category": "community_activity",
            "severity": "minor",
            "urgency": "future",
            "body": "各社区党员先锋岗招募周末值守志愿者，每班四小时，可在社区党群服务中心或通过网格员报名。",
            "audience": {"under": [street_id]},
            "channels": ["app_push"],
        },
    ]


def seed_demo(amqp_uri):
    with proxy(amqp_uri) as rpc:
        root = district_to_seed(
            rpc, "notices", "notices", lambda root: rpc.notices.list_notices(under=root, page_size=1)["items"]
        )
        if root is None:
            return
        clock = Stopwatch()
        street = rpc.grid.list_units(under=root["id"], level="street", page_size=1)["items"][0]
        published = []
        for notice in notices_for(root["id"], street["id"], street["name"]):
            draft = rpc.notices.create_notice(**notice)
            published.append(rpc.notices.approve_notice(notice_id=draft["id"])["id"])
        say(f"notices: published {len(published)} notices (ids {', '.join(published)}) in {clock}")


if __name__ == "__main__":
    from tools.suite import load_dev_secrets

    load_dev_secrets()
    seed_demo(os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
