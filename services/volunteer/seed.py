"""Demo volunteers for `make run`: a few residents of the demo district volunteer, and the first
community has a duty post with tomorrow's shifts (idempotent: skipped when the post exists)."""
import datetime as dt

from nameko.standalone.rpc import ClusterRpcProxy

from services.grid.seed import DEMO_CODE
from shared.auth import jwt_secret, mint_token

DAYTIME = [{"weekday": d, "start": "08:00", "end": "20:00"} for d in range(7)]
SKILL_SETS = (["delivery", "driving"], ["elderly_care", "psychological_support"], ["medical"], ["delivery"])


def seed_demo(amqp_uri):
    token = mint_token(jwt_secret(), "demo-seeder", ["admin"], ttl=600)
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
        district = next(u for u in proxy.grid.list_units(level="district", page_size=500)["items"]
                        if u["code"] == DEMO_CODE)
        if proxy.volunteer.list_volunteers(under=district["id"], page_size=1)["items"]:
            print("[grassroots] demo volunteers already present", flush=True)
            return
        residents = proxy.grid.find_residents(under=district["id"], page_size=12)["items"]
        for n, resident in enumerate(residents[::3]):
            proxy.volunteer.register_volunteer(
                name=resident["name"], phone=f"1370000{n:04d}", home_unit_id=resident["unit_id"],
                skills=SKILL_SETS[n % len(SKILL_SETS)], availability=DAYTIME, resident_id=resident["id"],
                party_member=n % 2 == 0)
        community = proxy.grid.list_units(under=district["id"], level="community", page_size=1)["items"][0]
        post = proxy.volunteer.create_post(unit_id=community["id"], name="党员先锋岗 Vanguard post",
                                           location="北门 North gate")
        tomorrow = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
        for hours in (0, 4):
            start = tomorrow + dt.timedelta(hours=hours)
            proxy.volunteer.add_shift(post_id=post["id"], starts_at=start.isoformat(),
                                      ends_at=(start + dt.timedelta(hours=4)).isoformat(), needed=2)
        print(f"[grassroots] demo volunteers seeded: {len(residents[::3])} volunteers, a post with 2 shifts",
              flush=True)
