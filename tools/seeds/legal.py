"""Demo legal data for `make run` (see ``tools.demo_data``): a public legal service station in every
street of the demo district and a legal service room in about half of its communities, three dozen
lawyers with weekly plans, a few with time off. Idempotent: skipped when the district has stations.

    python -m tools.seeds.legal
"""

import datetime as dt
import os

from tools.demo_data import build_district
from tools.demo_seed import (
    Stopwatch,
    batch,
    district_to_seed,
    progress,
    proxy,
    residents_by_phone,
    say,
    unit_ids,
)


def seed_demo(amqp_uri, district=None):
    data = district or build_district()
    with proxy(amqp_uri) as rpc:
        root = district_to_seed(rpc, "legal", "stations", lambda root: rpc.legal.list_stations(under=root))
        if root is None:
            return
        clock = Stopwatch()
        ids = unit_ids(rpc.grid, root["id"])
        residents = residents_by_phone(amqp_uri, root["id"])
        with progress() as bar:
            made = batch(
                rpc.legal.create_station,
                [{"unit_id": ids[s.unit_code], "name": s.name, "address": s.address} for s in data.stations],
                bar,
                "legal stations",
            )
            station_ids = {s.key: answer["id"] for s, answer in zip(data.stations, made, strict=True)}
            made = batch(
                rpc.legal.register_lawyer,
                [
                    {
                        "name": lawyer.name,
                        "firm": lawyer.firm,
                        "license_no": lawyer.license_no,
                        "specialties": lawyer.specialties,
                        "station_ids": [station_ids[k] for k in lawyer.station_keys],
                        "resident_id": residents[lawyer.resident_phone]["id"] if lawyer.resident_phone else None,
                    }
                    for lawyer in data.lawyers
                ],
                bar,
                "lawyers",
            )
            lawyer_ids = [answer["id"] for answer in made]
            # one plan per station at a time: a lawyer's plans are checked against each other
            for round_ in range(max(len(lawyer.schedules) for lawyer in data.lawyers)):
                batch(
                    rpc.legal.set_schedule,
                    [
                        {"lawyer_id": lawyer_id, "station_id": station_ids[key], "weekly": weekly}
                        for lawyer_id, lawyer in zip(lawyer_ids, data.lawyers, strict=True)
                        for n, (key, weekly) in enumerate(sorted(lawyer.schedules.items()))
                        if n == round_
                    ],
                    bar,
                    f"weekly plans ({round_ + 1})",
                )
            start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            batch(
                rpc.legal.add_time_off,
                [
                    {
                        "lawyer_id": lawyer_id,
                        "starts_at": (start + dt.timedelta(days=3 + n)).isoformat(),
                        "ends_at": (start + dt.timedelta(days=5 + n)).isoformat(),
                        "reason": "出庭 In court",
                    }
                    for n, lawyer_id in enumerate(lawyer_ids[::9])
                ],
                bar,
                "time off",
            )
        say(
            f"legal: seeded {len(station_ids)} stations and {len(lawyer_ids)} lawyers in {clock} "
            f"(e.g. lawyer {lawyer_ids[-1]}, station {station_ids[data.stations[0].key]})"
        )


if __name__ == "__main__":
    from tools.suite import load_dev_secrets

    load_dev_secrets()
    seed_demo(os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
