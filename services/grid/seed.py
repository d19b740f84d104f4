"""A small demo district, created through the grid's own RPC (idempotent: skipped if present).

    python -m services.grid.seed   # needs the grid service running, AMQP_URI and GRASSROOTS_JWT_SECRET
"""
import datetime as dt
import os
import random

from nameko.standalone.rpc import ClusterRpcProxy

from services.grid.idnumbers import make_id_number
from shared.auth import jwt_secret, mint_token

DEMO_CODE = "DEMO-DISTRICT"
SURNAMES = "王李张刘陈杨黄赵吴周"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛"]


def _existing_demo(grid):
    for unit in grid.list_units(level="district", page_size=500)["items"]:
        if unit["code"] == DEMO_CODE:
            return unit
    return None


def seed_demo(amqp_uri, residents_per_small_grid=6):
    token = mint_token(jwt_secret(), "demo-seeder", ["admin"], ttl=600)
    rng = random.Random(2020)
    with ClusterRpcProxy({"AMQP_URI": amqp_uri}, context_data={"auth_token": token}, timeout=30) as proxy:
        grid = proxy.grid
        existing = _existing_demo(grid)
        if existing:
            print(f"[grassroots] demo district already present (unit {existing['id']})", flush=True)
            return existing["id"]
        district = grid.create_unit(parent_id=None, level="district", name="示范区 Demo District", code=DEMO_CODE)
        grid.set_party_org(unit_id=district["id"], name="示范区综合党委")
        seq = 0
        small_grids = []
        for s in range(2):
            street = grid.create_unit(parent_id=district["id"], level="street", name=f"第{s + 1}街道")
            for c in range(2):
                community = grid.create_unit(parent_id=street["id"], level="community", name=f"阳光社区{s + 1}-{c + 1}")
                grid.set_party_org(unit_id=community["id"], name=f"阳光社区{s + 1}-{c + 1}党总支")
                grid.assign_staff(unit_id=community["id"], user_id=f"officer-{s}{c}", role="officer",
                                  name=rng.choice(SURNAMES) + rng.choice(GIVEN))
                large = grid.create_unit(parent_id=community["id"], level="grid_large", name="第一大网格")
                medium = grid.create_unit(parent_id=large["id"], level="grid_medium", name="第一中网格")
                for g in range(2):
                    small = grid.create_unit(parent_id=medium["id"], level="grid_small", name=f"第{g + 1}小网格")
                    grid.assign_staff(unit_id=small["id"], user_id=f"worker-{s}{c}{g}", role="grid_worker",
                                      name=rng.choice(SURNAMES) + rng.choice(GIVEN))
                    small_grids.append(small["id"])
        for small in small_grids:
            household = None
            for r in range(residents_per_small_grid):
                if r % 3 == 0:
                    household = grid.register_household(unit_id=small, address={
                        "compound": "阳光花园", "building": str(rng.randint(1, 12)),
                        "entrance": str(rng.randint(1, 4)), "room": f"{rng.randint(1, 18)}0{rng.randint(1, 4)}"})
                seq += 1
                birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 70))
                resident = grid.register_resident(
                    household_id=household["id"], name=rng.choice(SURNAMES) + rng.choice(GIVEN),
                    id_number=make_id_number("370102", birth, seq), phone=f"139{rng.randint(0, 99999999):08d}",
                    birth_date=birth.isoformat())
                if birth.year < 1955:
                    grid.tag_resident(resident_id=resident["id"], tag="elderly_alone")
                if rng.random() < 0.15:
                    grid.tag_resident(resident_id=resident["id"], tag="chronic_illness")
                if rng.random() < 0.1:
                    grid.tag_resident(resident_id=resident["id"], tag="party_member")
        today = dt.date.today()
        grid.start_screening(under=district["id"], title="入户摸排 Door-to-door screening",
                             starts_on=today.isoformat(), ends_on=(today + dt.timedelta(days=14)).isoformat())
        grid.report_incident(unit_id=small_grids[0], category="infrastructure", description="楼道灯损坏 Stairwell light broken")
        print(f"[grassroots] demo district seeded: unit {district['id']}, {len(small_grids)} small grids, "
              f"{seq} residents", flush=True)
        return district["id"]


if __name__ == "__main__":
    seed_demo(os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
