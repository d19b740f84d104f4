"""Demo legal data for `make run`: a station in the demo district's first community, two lawyers
with weekday plans (idempotent: skipped when the demo station exists)."""
from nameko.standalone.rpc import ClusterRpcProxy

from services.grid.seed import DEMO_CODE
from shared.auth import jwt_secret, mint_token

STATION_NAME = "阳光社区法律服务站 Demo legal station"
WEEKDAYS = [{"weekday": d, "start": "09:00", "end": "11:30"} for d in range(5)] + \
           [{"weekday": d, "start": "14:00", "end": "17:00"} for d in range(5)]


def seed_demo(amqp_uri):
    token = mint_token(jwt_secret(), "demo-seeder", ["admin"], ttl=600)
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
        district = next(u for u in proxy.grid.list_units(level="district", page_size=500)["items"]
                        if u["code"] == DEMO_CODE)
        community = proxy.grid.list_units(under=district["id"], level="community", page_size=1)["items"][0]
        if proxy.legal.list_stations(under=community["id"]):
            print("[grassroots] demo legal station already present", flush=True)
            return
        station = proxy.legal.create_station(unit_id=community["id"], name=STATION_NAME, address="阳光路1号")
        for name, licence, specialties in (("张律师 Lawyer Zhang", "DEMO-0000001", ["family", "housing_property"]),
                                           ("李律师 Lawyer Li", "DEMO-0000002", ["labour", "contract", "consumer"])):
            lawyer = proxy.legal.register_lawyer(name=name, firm="阳光律师事务所", license_no=licence,
                                                 specialties=specialties, station_ids=[station["id"]])
            proxy.legal.set_schedule(lawyer_id=lawyer["id"], station_id=station["id"], weekly=WEEKDAYS)
        print(f"[grassroots] demo legal station seeded: station {station['id']}, 2 lawyers", flush=True)

