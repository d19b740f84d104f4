"""The demo district (滨城区, see ``tools.demo_data``) created through the grid's own RPC:
units with their Party organisations and staff, households, residents and their tags, a
door-to-door screening with visits, a few incidents. Idempotent: skipped when the district exists.

    python -m tools.seeds.grid   # needs the grid service running, AMQP_URI and GRASSROOTS_JWT_SECRET
"""

import datetime as dt
import os

from services.grid.vocabulary import LEVELS
from tools.demo_data import build_district
from tools.demo_seed import Stopwatch, batch, find_district, progress, proxy, remember, say


def seed_demo(amqp_uri):
    data = build_district()
    with proxy(amqp_uri) as rpc:
        grid = rpc.grid
        existing = find_district(grid)
        if existing:
            say(
                f"grid: demo district {existing['name']} already present (unit {existing['id']}); "
                "`make clean` and `make run` to seed it afresh"
            )
            return existing["id"]
        clock = Stopwatch()
        say(f"grid: seeding the demo district {data.root.name} (seed {data.seed})")
        ids = {}
        with progress() as bar:
            root = grid.create_unit(parent_id=None, level="district", name=data.root.name, code=data.root.code)
            ids[data.root.code] = root["id"]
            parents = {data.root.code: data.root}
            for level in LEVELS[1:]:  # every level below the district
                units = [(parent_code, child) for parent_code, parent in parents.items() for child in parent.children]
                made = batch(
                    grid.create_unit,
                    [
                        {"parent_id": ids[parent_code], "level": level, "name": unit.name, "code": unit.code}
                        for parent_code, unit in units
                    ],
                    bar,
                    f"units: {level}",
                )
                ids.update({unit.code: answer["id"] for (_, unit), answer in zip(units, made, strict=True)})
                parents = {unit.code: unit for _, unit in units}
            units = data.units()
            batch(
                grid.set_party_org,
                [{"unit_id": ids[u.code], "name": u.party_org} for u in units if u.party_org],
                bar,
                "party organisations",
            )
            batch(
                grid.assign_staff,
                [
                    {"unit_id": ids[u.code], "user_id": s.user_id, "role": s.role, "name": s.name}
                    for u in units
                    for s in u.staff
                ],
                bar,
                "staff",
            )
            households = data.households()
            made = batch(
                grid.register_household,
                [{"unit_id": ids[h.unit_code], "address": h.address} for h in households],
                bar,
                "households",
            )
            household_ids = {h.key: answer["id"] for h, answer in zip(households, made, strict=True)}
            people = [(h, r) for h in households for r in h.residents]
            made = batch(
                grid.register_resident,
                [
                    {
                        "household_id": household_ids[h.key],
                        "name": r.name,
                        "id_number": r.id_number,
                        "phone": r.phone,
                        "birth_date": r.birth_date.isoformat(),
                    }
                    for h, r in people
                ],
                bar,
                "residents",
            )
            resident_ids = {r.phone: answer["id"] for (_, r), answer in zip(people, made, strict=True)}
            batch(
                grid.tag_resident,
                [{"resident_id": resident_ids[r.phone], "tag": tag} for _, r in people for tag in r.tags],
                bar,
                "tags",
            )
            today = dt.date.today()
            campaign = grid.start_screening(
                under=root["id"],
                title="入户大走访：独居老人与重点人群摸排",
                starts_on=(today - dt.timedelta(days=3)).isoformat(),
                ends_on=(today + dt.timedelta(days=25)).isoformat(),
            )
            batch(
                grid.record_visit,
                [
                    {
                        "campaign_id": campaign["id"],
                        "household_id": household_ids[v.household_key],
                        "outcome": v.outcome,
                        "note": v.note,
                    }
                    for v in data.visits
                ],
                bar,
                "screening visits",
            )
            incidents = batch(
                grid.report_incident,
                [
                    {"unit_id": ids[i.unit_code], "category": i.category, "description": i.description}
                    for i in data.incidents
                ],
                bar,
                "incidents",
            )
            remember(district=root["id"], street=ids[data.root.children[0].code], campaign=campaign["id"])
            for incident, reported in zip(data.incidents, incidents, strict=True):
                if incident.resolution:
                    grid.resolve_incident(incident_id=reported["id"], resolution=incident.resolution)
        counts = data.counts()
        # Visits with outcome seen_concern raise public_health incidents by themselves (origin grid:visit/<id>).
        listed = _all_incidents(grid, root["id"])
        raised = [i for i in listed if (i["origin"] or "").startswith("grid:visit/")]
        reported_ids = {r["id"] for r in incidents}
        resolved = sum(1 for i in listed if i["id"] in reported_ids and i["status"] == "resolved")
        say(
            f"grid: seeded {data.root.name} (unit {root['id']}) in {clock}: "
            + ", ".join(f"{n} {level}" for level, n in counts["units"].items())
            + f"; {counts['households']} households, {counts['residents']} residents, "
            f"{sum(counts['tags'].values())} tags, {counts['staff']} staff, {len(data.visits)} visits "
            f"(campaign {campaign['id']}); incidents: {len(incidents)} reported ({resolved} resolved) "
            f"and {len(raised)} raised by visits that found a concern (seen_concern)"
        )
        return root["id"]


def _all_incidents(grid, under):
    items, page = [], 1
    while True:
        answer = grid.list_incidents(under=under, page=page, page_size=500)
        items += answer["items"]
        if not answer["has_more"]:
            return items
        page += 1


if __name__ == "__main__":
    from tools.suite import load_dev_secrets

    load_dev_secrets()
    seed_demo(os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
