"""Demo volunteers for `make run` (see ``tools.demo_data``): a few hundred volunteers, most of them
residents of the demo district, with skills and weekly availability; a Party-member vanguard post
(党员先锋岗) in every community with shifts over the next two days and their sign-ups; public
pledges; help requests from elderly and disabled residents, offered to nearby volunteers, some
accepted and done. Idempotent: skipped when the district has volunteers.

    python -m tools.seeds.volunteer
"""

import datetime as dt
import os
from zoneinfo import ZoneInfo

from tools.demo_data import Volunteer, build_district
from tools.demo_seed import (
    Stopwatch,
    batch,
    district_to_seed,
    errors_in,
    progress,
    proxy,
    remember,
    residents_by_phone,
    say,
    unit_ids,
)

ZONE = ZoneInfo("Asia/Shanghai")


def _local(day_offset, clock):
    day = dt.datetime.now(ZONE).date() + dt.timedelta(days=day_offset)
    hour, minute = map(int, clock.split(":"))
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE).astimezone(dt.UTC)


def seed_demo(amqp_uri, district=None):
    data = district or build_district()
    with proxy(amqp_uri) as rpc:
        root = district_to_seed(
            rpc, "volunteer", "volunteers", lambda root: rpc.volunteer.list_volunteers(under=root, page_size=1)["items"]
        )
        if root is None:
            return
        clock = Stopwatch()
        ids = unit_ids(rpc.grid, root["id"])
        residents = residents_by_phone(amqp_uri, root["id"])
        volunteer = rpc.volunteer
        with progress() as bar:
            made = batch(
                volunteer.register_volunteer,
                [
                    {
                        "name": v.name,
                        "phone": v.phone,
                        "home_unit_id": ids[v.home_unit_code],
                        "skills": v.skills,
                        "availability": v.availability,
                        "max_active_tasks": v.max_active_tasks,
                        "party_member": v.party_member,
                        "resident_id": residents[v.resident_phone]["id"] if v.resident_phone else None,
                    }
                    for v in data.volunteers
                ],
                bar,
                "volunteers",
            )
            volunteer_ids = {v.phone: answer["id"] for v, answer in zip(data.volunteers, made, strict=True)}
            pledges = batch(
                volunteer.make_pledge,
                [
                    {
                        "volunteer_id": volunteer_ids[p.volunteer_phone],
                        "text": p.text,
                        "due_on": (dt.date.today() + dt.timedelta(days=p.due_in_days)).isoformat(),
                    }
                    for p in data.pledges
                ],
                bar,
                "pledges",
            )
            batch(
                volunteer.fulfil_pledge,
                [
                    {"pledge_id": made["id"], "note": p.fulfilled_note}
                    for p, made in zip(data.pledges, pledges, strict=True)
                    if p.fulfilled_note
                ],
                bar,
                "pledges kept",
            )
            posts = batch(
                volunteer.create_post,
                [{"unit_id": ids[p.unit_code], "name": p.name, "location": p.location} for p in data.posts],
                bar,
                "duty posts",
            )
            shifts = [
                (post_id, shift)
                for post_id, post in zip((p["id"] for p in posts), data.posts, strict=True)
                for shift in post.shifts
            ]
            made = batch(
                volunteer.add_shift,
                [
                    {
                        "post_id": post_id,
                        "starts_at": _local(s.day_offset, s.start).isoformat(),
                        "ends_at": _local(s.day_offset, s.end).isoformat(),
                        "needed": s.needed,
                    }
                    for post_id, s in shifts
                ],
                bar,
                "shifts",
            )
            signups = batch(
                volunteer.sign_up,
                [
                    {"shift_id": answer["id"], "volunteer_id": volunteer_ids[phone]}
                    for (_, s), answer in zip(shifts, made, strict=True)
                    for phone in s.volunteer_phones
                ],
                bar,
                "shift sign-ups",
                errors="keep",
            )
            now = dt.datetime.now(dt.UTC)
            requests = batch(
                volunteer.create_request,
                [
                    {
                        "unit_id": ids[r.unit_code],
                        "kind": r.kind,
                        "details": r.details,
                        "urgency": r.urgency,
                        "needed_by": (now + dt.timedelta(hours=r.needed_in_hours)).isoformat(),
                        "resident_id": residents[r.resident_phone]["id"],
                    }
                    for r in data.requests
                ],
                bar,
                "help requests",
                window=8,
            )
            # who was each request offered to? (a volunteer's pending offers)
            tasks = batch(volunteer.my_tasks, [{"volunteer_id": i} for i in volunteer_ids.values()], bar, "offers")
            offers = {offer["request_id"]: offer for answer in tasks for offer in answer["offers"]}
            accepted = batch(
                volunteer.respond_offer,
                [
                    {"offer_id": offers[made["id"]]["id"], "accept": True}
                    for r, made in zip(data.requests, requests, strict=True)
                    if r.accept and made["id"] in offers
                ],
                bar,
                "offers accepted",
                errors="keep",
            )
            matched = {a["request"]["id"] for a in accepted if not isinstance(a, Exception)}
            completed = batch(
                volunteer.complete_request,
                [
                    {"request_id": made["id"], "note": "已完成，老人表示感谢"}
                    for r, made in zip(data.requests, requests, strict=True)
                    if r.complete and made["id"] in matched
                ],
                bar,
                "requests done",
                errors="keep",
            )
        signed = len(signups) - len(errors_in(signups))
        say(
            f"volunteer: seeded {len(volunteer_ids)} volunteers "
            f"({sum(1 for v in data.volunteers if v.resident_phone)} of them residents), {len(posts)} duty posts "
            f"with {len(shifts)} shifts and {signed} sign-ups, {len(pledges)} pledges, {len(requests)} help "
            f"requests ({len(offers)} offered, {len(matched)} accepted, "
            f"{len(completed) - len(errors_in(completed))} done) in {clock}"
        )
        for what, answers in (("shift sign-ups", signups), ("offer acceptances", accepted), ("completions", completed)):
            failed = errors_in(answers)
            if failed:
                say(f"[yellow]volunteer: {len(failed)} of {len(answers)} {what} failed[/] (first: {failed[0]})")
        _demo_pointers(data, ids, volunteer_ids)


def _demo_pointers(data, ids, volunteer_ids):
    """A few ids to start exploring from: `make run` prints commands with them (tools.demo_seed)."""
    crews: dict[str, list[Volunteer]] = {}
    for v in data.volunteers:
        crews.setdefault(v.home_unit_code, []).append(v)
    code, crew = max(crews.items(), key=lambda item: (len(item[1]), item[0]))
    remember(small_grid=ids[code], volunteer=volunteer_ids[crew[0].phone])


if __name__ == "__main__":
    from tools.suite import load_dev_secrets

    load_dev_secrets()
    seed_demo(os.environ.get("AMQP_URI", "amqp://guest:guest@localhost:5672/"))
