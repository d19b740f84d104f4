"""`make demo`: three cross-service scenarios played against the running suite (`make run` in another
terminal), printed step by step.

    python -m tools.demo [--timeout 30] [--only quarantine|dispute|keypress] [--ack-seconds 15]

1. Quarantine — a grid worker tags a resident ``quarantined``; notices sends the household its
   ``quarantine_instructions``; volunteer opens daily ``groceries`` and ``check_in`` requests for the
   household and offers them to nearby volunteers, who accept and see the need and the address (no
   health tags); lifting the quarantine cancels the household's open requests.
2. Dispute — a grid worker reports a neighbour dispute between two households; legal opens a
   mediation case for it; a lawyer mediates and closes it with an agreement, and the incident is
   resolved with that outcome. A second dispute referred to court escalates its incident to the
   political-legal department.
3. Keypress — a notice that must be acknowledged goes by voice call to the elderly residents living
   alone in a small grid; one of them presses 1 in the call (the voice gateway reports the keypress
   through the signed HTTP webhook, as a real gateway would); when the acknowledgement deadline passes,
   volunteer raises a door-knock for each silent neighbour's household, and none for hers.

Every effect another service produces is polled for until it appears; one that does not appear
within ``--timeout`` seconds is reported as a failure, and the exit status is then 1.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from zoneinfo import ZoneInfo

from amqp.exceptions import AMQPError
from nameko.exceptions import RemoteError, RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from services import registry
from services.grid.vocabulary import TAGS
from services.notices.webhook import signed_request
from shared.auth import jwt_secret, mint_token
from shared.errors import Conflict
from tools.demo_data import DISTRICT_CODE
from tools.demo_seed import find_district

DEFAULT_AMQP_URI = "amqp://guest:guest@localhost:5672/"
# The tags no volunteer may see (every grid tag but Party membership).
HEALTH_TAGS = tuple(tag for tag in TAGS if tag != "party_member")
CARE_KINDS = ("groceries", "check_in")
ZONE = ZoneInfo("Asia/Shanghai")
LIVE_STATUSES = ("open", "offered", "matched")
SCENARIOS = ("quarantine", "dispute", "keypress")
# The voice gateway's webhook secret (docs/gateways.md); `make run` keeps it in var/dev.env.
VOICE_SECRET_ENV = "NOTICES_VOICE_INBOUND_SECRET"

console = Console(highlight=False)


def local(iso):
    """An ISO timestamp as the district's local time, e.g. ``11-27 09:30 CST``."""
    return f"{dt.datetime.fromisoformat(iso).astimezone(ZONE):%m-%d %H:%M} CST"


class Failed(Exception):
    """An expected effect did not appear in time."""


class Demo:
    def __init__(self, amqp_uri, timeout, notices_url=None, ack_seconds=15.0):
        self.amqp_uri = amqp_uri
        self.timeout = timeout
        self.started = time.monotonic()
        self.proxies = {}
        self.secret = jwt_secret()
        # where the voice gateway posts its keypresses: notices' web port (`make run`: 8002)
        self.notices_url = notices_url or f"http://127.0.0.1:{registry.get('notices').dev_port}"
        self.ack_seconds = ack_seconds

    # ---- plumbing -----------------------------------------------------------

    def as_(self, sub="demo", roles=("admin",), unit=None, pii=False):
        """A service proxy calling with a token for ``sub`` in ``roles`` (one connection per identity)."""
        key = (sub, tuple(roles), unit, pii)
        if key not in self.proxies:
            token = mint_token(self.secret, sub, list(roles), unit=unit, pii=pii, ttl=3600)
            cluster = ClusterRpcProxy({"AMQP_URI": self.amqp_uri}, context_data={"auth_token": token}, timeout=30)
            self.proxies[key] = (cluster, cluster.start())
        return self.proxies[key][1]

    @property
    def admin(self):
        return self.as_()

    def close(self):
        for cluster, _ in self.proxies.values():
            cluster.stop()

    def log(self, message, style=""):
        now = dt.datetime.now(ZONE)  # the district's time, as in every table: CST (Asia/Shanghai, UTC+8)
        stamp = f"[dim]{now:%H:%M:%S}.{now.microsecond // 1000:03d} CST +{time.monotonic() - self.started:5.1f}s[/]"
        console.print(f"{stamp}  {message}", style=style)

    def step(self, title):
        console.print()
        console.rule(f"[bold]{title}", align="left")

    def show(self, title, data):
        console.print(
            Panel(json.dumps(data, ensure_ascii=False, indent=2), title=title, expand=False, border_style="cyan")
        )

    def wait_for(self, what, probe, timeout=None):
        """Poll ``probe()`` until it returns something truthy; Failed after the timeout."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        last_error = None
        with console.status(f"waiting for {what}…"):
            while True:
                try:
                    found = probe()
                    if found:
                        self.log(f"[green]✓[/] {what} [dim](after {timeout - (deadline - time.monotonic()):.1f}s)[/]")
                        return found
                except RemoteError as exc:  # e.g. a method or field the running suite does not have yet
                    last_error = exc
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.5)
        detail = f" (last error: {last_error.exc_type}: {last_error.value})" if last_error else ""
        raise Failed(f"{what}: not seen within {timeout:.0f}s{detail}")

    # ---- lookups -------------------------------------------------------------

    def district(self):
        return find_district(self.admin.grid)

    def all_pages(self, method, **kwargs):
        items, page = [], 1
        while True:
            answer = method(page=page, page_size=500, **kwargs)
            items += answer["items"]
            if not answer["has_more"]:
                return items
            page += 1

    def residents_of(self, unit_id):
        return self.admin.grid.find_residents(under=unit_id, page_size=1000)["items"]

    def worker_of(self, unit):
        """A token-bearing proxy for the small grid's grid worker (or an officer of it)."""
        staff = self.admin.grid.list_staff(unit_id=unit["id"])
        person = next((s for s in staff if s["role"] == "grid_worker"), None) or {
            "user_id": f"grid-worker-{unit['id']}",
            "name": "网格员",
        }
        return person, self.as_(person["user_id"], ("grid_worker",), unit=unit["id"])

    def unit_label(self, unit_id):
        names = [u["name"] for u in self.admin.grid.ancestors(unit_id=unit_id)]
        return " › ".join(names[1:])

    # ---- scenario 1: quarantine ---------------------------------------------------

    def pick_household(self, district):
        """A household of 2+ residents, nobody quarantined and no live care requests, in a small grid
        with volunteers (the best-staffed grids first)."""
        volunteers = self.all_pages(self.admin.volunteer.list_volunteers, under=district["id"])
        per_grid: dict[str, list[dict]] = {}
        for v in volunteers:
            if v["active"]:
                per_grid.setdefault(v["home_unit_id"], []).append(v)
        for unit_id, crew in sorted(per_grid.items(), key=lambda item: (-len(item[1]), int(item[0]))):
            unit = self.admin.grid.get_unit(unit_id=unit_id)
            if unit["level"] != "grid_small":
                continue
            households: dict[str, list[dict]] = {}
            for resident in self.residents_of(unit_id):
                households.setdefault(resident["household_id"], []).append(resident)
            # a household that had care today gets no new requests today (one per kind and day): skip it
            busy = {r.get("household_id") for r in self.all_pages(self.admin.volunteer.list_requests, under=unit_id)}
            crew_residents = {v.get("resident_id") for v in crew}
            for household_id, members in sorted(households.items(), key=lambda item: int(item[0])):
                if len(members) < 2 or household_id in busy:
                    continue
                if any("quarantined" in m["tags"] for m in members):
                    continue
                if any(m["id"] in crew_residents for m in members):
                    continue  # keep the grid's own volunteers out of the quarantined household
                return unit, household_id, members, crew
        return None

    def find_offer(self, request, district):
        """(volunteer, offer) a request is offered to, searching outward from its grid."""
        for scope in self.admin.grid.ancestors(unit_id=request["unit_id"])[::-1]:
            if scope["level"] in ("grid_small", "grid_medium", "grid_large"):
                continue
            volunteers = self.all_pages(self.admin.volunteer.list_volunteers, under=scope["id"])
            replies = [(v, self.admin.volunteer.my_tasks.call_async(volunteer_id=v["id"])) for v in volunteers]
            for volunteer, reply in replies:
                for offer in reply.result()["offers"]:
                    if offer["request_id"] == request["id"]:
                        return volunteer, offer
        return None

    def quarantine(self, district):
        self.step("Scenario 1 — home quarantine (居家隔离)")
        picked = self.pick_household(district)
        if picked is None:
            raise Failed("no household of 2+ residents in a small grid with volunteers (is the demo district seeded?)")
        unit, household_id, members, crew = picked
        resident = members[0]
        worker, as_worker = self.worker_of(unit)
        self.log(
            f"Small grid [bold]{self.unit_label(unit['id'])}[/] (unit {unit['id']}): {len(crew)} volunteers live here"
        )
        self.log(f"Household {household_id}: " + ", ".join(f"{m['name']} (resident {m['id']})" for m in members))
        before_notices = {n["id"] for n in self._direct_notices(unit["id"], quiet=True)}
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=14)).replace(microsecond=0)
        tagged = as_worker.grid.tag_resident(
            resident_id=resident["id"], tag="quarantined", until=until.isoformat(), note=None
        )
        self.log(
            f"Grid worker {worker['name']} ({worker['user_id']}) tags {resident['name']} "
            f"[bold red]quarantined[/] until {local(tagged['until'])}"
        )

        def instructions():
            return [
                n
                for n in self._direct_notices(unit["id"])
                if n["id"] not in before_notices and n.get("template") == "quarantine_instructions"
            ]

        notice = self.wait_for("notices: quarantine instructions sent to the household", instructions)[0]
        self.log(
            f"  direct message {notice['id']} «{notice['title']}», template {notice['template']}, "
            f"{notice['recipient_count']} recipients (the household has {len(members)})"
        )

        def care_requests():
            mine = [
                r
                for r in self.admin.volunteer.list_requests(under=unit["id"], page_size=500)["items"]
                if r.get("household_id") == household_id
                and r["kind"] in CARE_KINDS
                and r["status"] in LIVE_STATUSES + ("unmatched",)
            ]
            return mine if {r["kind"] for r in mine} >= set(CARE_KINDS) else None

        requests = self.wait_for("volunteer: groceries and check-in requests opened for the household", care_requests)
        for request in sorted(requests, key=lambda r: r["kind"]):
            self.log(
                f"  request {request['id']}: [bold]{request['kind']}[/], {request['status']}, urgency "
                f"{request['urgency']}, needed by {local(request['needed_by'])}, origin {request.get('origin')}"
            )
        for request in sorted(requests, key=lambda r: r["kind"]):
            self._match(request, district)
        self.step("Quarantine lifted")
        as_worker.grid.untag_resident(resident_id=resident["id"], tag="quarantined")
        self.log(f"Grid worker {worker['name']} lifts {resident['name']}'s quarantine")
        ids = {r["id"] for r in requests}

        def cancelled():
            now = {
                r["id"]: r
                for r in self.admin.volunteer.list_requests(under=unit["id"], page_size=500)["items"]
                if r["id"] in ids
            }
            return now if now and all(r["status"] == "cancelled" for r in now.values()) else None

        for request in sorted(
            self.wait_for("volunteer: the household's open requests cancelled", cancelled).values(),
            key=lambda r: r["kind"],
        ):
            self.log(f"  request {request['id']} ({request['kind']}): {request['status']}")

    def _direct_notices(self, unit_id, quiet=False):
        try:
            return self.admin.notices.list_notices(under=unit_id, kind="direct", page_size=50)["items"]
        except RemoteError:
            if quiet:
                return []
            raise

    def _match(self, request, district):
        kind = request["kind"]
        if request["status"] == "unmatched":
            self.log(f"  [yellow]{kind}: nobody nearby could take it (unmatched)[/]")
            return
        if request["status"] == "matched":
            volunteer = self.admin.volunteer.get_volunteer(volunteer_id=request["volunteer_id"])
            self.log(f"  {kind}: already matched to {volunteer['name']} (volunteer {volunteer['id']})")
        else:
            volunteer, offer = self.wait_for(
                f"volunteer: the {kind} request's offer", lambda: self.find_offer(request, district)
            )
            self.log(
                f"  {kind}: offered to [bold]{volunteer['name']}[/] (volunteer {volunteer['id']}, skills "
                f"{', '.join(volunteer['skills'])}, home unit {volunteer['home_unit_id']}); offer {offer['id']} "
                f"expires {local(offer['expires_at'])}"
            )
            as_volunteer = self.as_(volunteer["id"], ("volunteer",))
            try:
                answer = as_volunteer.volunteer.respond_offer(offer_id=offer["id"], accept=True)
                self.log(
                    f"  {volunteer['name']} accepts: request {answer['request']['id']} is "
                    f"[bold]{answer['request']['status']}[/]"
                )
            except Conflict as exc:
                self.log(f"  [yellow]{volunteer['name']} was too late: {exc.value}[/]")
                return
        as_volunteer = self.as_(volunteer["id"], ("volunteer",))
        view = as_volunteer.volunteer.get_request(request_id=request["id"])
        self.show(f"what volunteer {volunteer['name']} sees of request {request['id']}", view)
        leaked = sorted({tag for tag in HEALTH_TAGS if tag in json.dumps(view)} | ({"tags"} & set(view)))
        if leaked:
            raise Failed(f"the volunteer's view of request {request['id']} shows {', '.join(leaked)}")
        if not view.get("address"):
            raise Failed(f"the volunteer's view of request {request['id']} has no address")
        self.log("  the volunteer sees the need and the address — no health tags, no resident details")

    # ---- scenario 2: dispute ------------------------------------------------------

    def pick_parties(self, district, count):
        """``count`` pairs of adult residents of different households, each pair in one small grid."""
        pairs = []
        smalls = self.admin.grid.list_units(under=district["id"], level="grid_small", page_size=500)["items"]
        for unit in sorted(smalls, key=lambda u: -int(u["id"])):  # far from scenario 1's best-staffed grids
            households: dict[str, list[dict]] = {}
            for resident in self.residents_of(unit["id"]):
                if "quarantined" not in resident["tags"]:
                    households.setdefault(resident["household_id"], []).append(resident)
            if len(households) >= 2:
                first, second = sorted(households, key=int)[-2:]
                pairs.append((unit, households[first][0], households[second][0]))
            if len(pairs) == count:
                return pairs
        raise Failed("no small grid with two households (is the demo district seeded?)")

    def lawyers_near(self, unit):
        today = dt.date.today()
        found: dict[str, tuple] = {}
        for specialty in ("neighbour_dispute", "family", "housing_property"):
            for slot in self.admin.legal.find_slots(
                specialty=specialty,
                date_from=today.isoformat(),
                date_to=(today + dt.timedelta(days=14)).isoformat(),
                unit_id=unit["id"],
                limit=200,
            ):
                found.setdefault(slot["lawyer_id"], slot["lawyer_name"])
        if not found:
            raise Failed(f"no lawyer serves unit {unit['id']} or its street (is the demo district seeded?)")
        return sorted(found.items(), key=lambda item: int(item[0]))

    def dispute(self, district):
        self.step("Scenario 2 — a neighbour dispute mediated (矛盾纠纷调解)")
        (unit, a, b), (unit2, c, d) = self.pick_parties(district, 2)
        incident, case, lawyer = self._open_case(
            unit, a, b, "楼上卫生间漏水，楼下天花板发霉，双方多次协商未果 (water leaking into the flat below)"
        )
        as_lawyer = self.as_(lawyer[0], ("lawyer",))
        held = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(microsecond=0)
        as_lawyer.legal.record_session(
            case_id=case["id"],
            held_at=held.isoformat(),
            attendees=[a["name"], b["name"], lawyer[1]],
            notes="双方到场，查看漏水点，协商维修及赔偿方案。",
        )
        self.log(f"Lawyer {lawyer[1]} records a mediation session held at {local(held.isoformat())}")
        agreement = "楼上住户一周内修复防水层，并承担楼下天花板修复费用1500元；双方和解。"
        as_lawyer.legal.close_mediation(case_id=case["id"], outcome="agreement", agreement=agreement)
        self.log(f"Lawyer {lawyer[1]} closes case {case['id']}: [bold green]agreement[/] — {agreement}")

        def resolved():
            found = self.admin.grid.get_incident(incident_id=incident["id"])
            return found if found["status"] == "resolved" and "agreement" in (found["resolution"] or "") else None

        found = self.wait_for(f"grid: incident {incident['id']} resolved with the agreement", resolved)
        self.log(f"  incident {found['id']}: [bold]{found['status']}[/], resolution «{found['resolution']}»")
        self._steps(found)

        self.step("Scenario 2b — a dispute referred to court")
        incident, case, lawyer = self._open_case(
            unit2, c, d, "宅基地边界纠纷，一方拒绝调解，要求起诉 (a boundary dispute; one party wants to sue)"
        )
        self.as_(lawyer[0], ("lawyer",)).legal.close_mediation(case_id=case["id"], outcome="referred_to_court")
        self.log(f"Lawyer {lawyer[1]} closes case {case['id']}: [bold yellow]referred_to_court[/]")

        def escalated():
            found = self.admin.grid.get_incident(incident_id=incident["id"])
            return (
                found
                if (found["status"], found["handling_level"], found["department"])
                == ("escalated", "department", "political_legal")
                else None
            )

        found = self.wait_for(f"grid: incident {incident['id']} escalated to the political-legal department", escalated)
        self.log(
            f"  incident {found['id']}: [bold]{found['status']}[/], handled by {found['handling_level']} "
            f"[bold]{found['department']}[/]"
        )
        self._steps(found)

    def _open_case(self, unit, a, b, description):
        worker, as_worker = self.worker_of(unit)
        self.log(
            f"Small grid [bold]{self.unit_label(unit['id'])}[/] (unit {unit['id']}): {a['name']} "
            f"(household {a['household_id']}) and {b['name']} (household {b['household_id']})"
        )
        incident = as_worker.grid.report_incident(
            unit_id=unit["id"], category="dispute", description=description, party_resident_ids=[a["id"], b["id"]]
        )
        self.log(
            f"Grid worker {worker['name']} reports incident {incident['id']}: dispute, department "
            f"{incident['department']}, handled at {incident['handling_level']}"
        )

        def case_opened():
            return next(
                (
                    c
                    for c in self.admin.legal.list_cases(under=unit["id"], page_size=100)["items"]
                    if c.get("source_incident_id") == incident["id"]
                ),
                None,
            )

        case = self.wait_for(f"legal: mediation case opened for incident {incident['id']}", case_opened)
        self.log(
            f"  case {case['id']}: {case['category']}, {case['status']}, parties "
            f"{', '.join(case['party_resident_ids'])}"
        )
        for lawyer in self.lawyers_near(unit):
            try:
                self.admin.legal.assign_mediator(case_id=case["id"], mediator_id=lawyer[0], kind="judicial")
            except Conflict as exc:  # the lawyer lives in a party's household
                self.log(f"  [dim]lawyer {lawyer[1]} cannot mediate: {exc.value}[/]")
                continue
            self.log(f"Officer assigns lawyer [bold]{lawyer[1]}[/] (lawyer {lawyer[0]}) as judicial mediator")
            return incident, case, lawyer
        raise Failed(f"no lawyer could be assigned to case {case['id']}")

    # ---- scenario 3: a keypress acknowledges ----------------------------------------------

    def pick_elderly(self, district):
        """(small grid, [residents tagged elderly_alone there, one per household]): the small grid with the
        fewest such residents, at least two, so that the notice reaches few."""
        smalls = self.all_pages(self.admin.grid.list_units, under=district["id"], level="grid_small")
        counts = [
            (unit, self.admin.grid.count_residents.call_async(under=unit["id"], tags_any=["elderly_alone"]))
            for unit in smalls
        ]
        ranked = sorted(
            ((reply.result()["count"], int(unit["id"]), unit) for unit, reply in counts), key=lambda c: c[:2]
        )
        for count, _, unit in ranked:
            if count < 2:
                continue
            elderly = self.admin.grid.find_residents(under=unit["id"], tags_any=["elderly_alone"], page_size=100)
            by_household: dict[str, dict] = {}
            for resident in sorted(elderly["items"], key=lambda r: int(r["id"])):
                by_household.setdefault(resident["household_id"], resident)
            if len(by_household) >= 2:
                # her first: a woman's ID number has an even 17th digit (visible in the masked form)
                return unit, sorted(by_household.values(), key=lambda r: not _female(r))
        raise Failed("no small grid with two elderly residents living alone (is the demo district seeded?)")

    def keypress(self, district):
        self.step("Scenario 3 — an elderly resident presses 1 (按键确认)")
        unit, elderly = self.pick_elderly(district)
        her, silent = elderly[0], elderly[1:]
        self.log(
            f"Small grid [bold]{self.unit_label(unit['id'])}[/] (unit {unit['id']}): {len(elderly)} elderly "
            f"residents living alone — " + ", ".join(f"{r['name']} (household {r['household_id']})" for r in elderly)
        )
        officer = self.as_(f"demo-officer-{unit['id']}", ("officer",), unit=unit["id"])
        deadline = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.ack_seconds)).replace(microsecond=0)
        notice = officer.notices.create_notice(
            title="明日停水通知 (water off tomorrow)",
            body="明日9:00-12:00停水，请提前储水。收到请按1。(Water is off 9-12 tomorrow; press 1 if you heard this.)",
            category="community_activity",
            severity="moderate",
            urgency="expected",
            audience={"under": [unit["id"]], "tags_any": ["elderly_alone"]},
            channels=["voice_call"],
            requires_ack=True,
            ack_deadline=deadline.isoformat(),
        )
        officer.notices.approve_notice(notice_id=notice["id"])
        self.log(
            f"Officer sends notice {notice['id']} «{notice['title']}» by [bold]voice call[/] to the grid's "
            f"elderly living alone; acknowledgement due by {deadline.astimezone(ZONE):%H:%M:%S} CST "
            f"({self.ack_seconds:.0f} s)"
        )

        def called():
            report = officer.notices.delivery_report(notice_id=notice["id"])
            return report if report["targeted"] and report["sent"] + report["delivered"] >= report["targeted"] else None

        report = self.wait_for("notices: the voice calls placed", called)
        self.log(f"  {report['targeted']} residents called: {report['sent'] + report['delivered']} calls placed")
        # The gateway knows the caller's number from the call; the demo reads it as the gateway would see it.
        phone = self.as_("demo-voice-gateway", ("admin",), pii=True).grid.get_resident(resident_id=her["id"])["phone"]
        answer = self._press_1(phone)
        self.log(
            f"{her['name']} presses [bold green]1[/] in the call: the voice gateway reports it ({answer['via']}); "
            f"outcome [bold]{answer['outcome']}[/], matched by {answer['matched_by']} to delivery "
            f"{answer['delivery_id']} of notice {answer['notice_id']}"
        )
        if answer["notice_id"] != notice["id"] or answer["resident_id"] != her["id"]:
            raise Failed(f"the keypress was matched to notice {answer['notice_id']}, resident {answer['resident_id']}")
        acknowledged = self.wait_for(
            "notices: the acknowledgement counted in the delivery report",
            lambda: officer.notices.delivery_report(notice_id=notice["id"])["acknowledged"] >= 1,
        )
        if acknowledged:
            self.log(f"  delivery report: 1 of {report['targeted']} acknowledged")
        households = {r["household_id"]: r for r in elderly}
        origin = f"unack:notice/{notice['id']}:household/"

        def knocks():
            found = {
                r["household_id"]: r
                for r in self.admin.volunteer.list_requests(under=unit["id"], page_size=500)["items"]
                if (r.get("origin") or "").startswith(origin)
            }
            return found if set(found) >= {r["household_id"] for r in silent} else None

        remaining = max(0.0, (deadline - dt.datetime.now(dt.UTC)).total_seconds())
        self.log(f"  [dim]waiting for the deadline ({remaining:.0f} s) and the door-knocks it raises…[/]")
        found = self.wait_for(
            "volunteer: a door-knock for each silent neighbour's household", knocks, timeout=self.timeout + remaining
        )
        for household_id, request in sorted(found.items(), key=lambda item: int(item[0])):
            who = households.get(household_id)
            self.log(
                f"  request {request['id']}: [bold]{request['kind']}[/] ({request['urgency']}) at household "
                f"{household_id}" + (f" — {who['name']} did not answer" if who else "")
            )
        if her["household_id"] in found:
            raise Failed(
                f"{her['name']} pressed 1, yet her household got door-knock {found[her['household_id']]['id']}"
            )
        self.log(f"  [green]no door-knock for {her['name']}[/]: she pressed 1")

    def _press_1(self, phone):
        """The voice gateway reports a keypress: the signed HTTP webhook when `make run`'s dev env has the
        voice gateway's secret, else notices.record_inbound over RPC as the gateway's service."""
        event = {
            "kind": "keypress",
            "gateway_event_id": f"demo-call-{uuid.uuid4().hex[:12]}",
            "from_phone": phone,
            "digits": "1",
        }
        secret = os.environ.get(VOICE_SECRET_ENV)
        if not secret:
            answer = self.as_("service:voice-gateway", ("service",)).notices.record_inbound(gateway="voice", **event)
            return {**answer, "via": f"over RPC: no {VOICE_SECRET_ENV} in var/dev.env"}
        body = json.dumps(event).encode()
        request = signed_request(f"{self.notices_url}/gateways/voice/inbound", secret, body)
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return {**json.loads(response.read()), "via": "signed webhook POST /gateways/voice/inbound"}
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise Failed(f"the keypress webhook answered {exc.code}: {detail}") from None

    def _steps(self, incident):
        table = Table(
            "at (CST)",
            "action",
            "from",
            "to",
            "by",
            "note",
            title=f"incident {incident['id']} steps",
            title_justify="left",
        )
        for s in incident.get("steps", []):
            table.add_row(
                local(s["at"])[6:11],
                s["action"],
                s["from_level"] or "",
                s["to_level"] or "",
                s["actor"],
                (s["note"] or "")[:60],
            )
        console.print(table)


def _female(resident):
    number = resident.get("id_number") or ""
    return len(number) == 18 and number[16].isdigit() and int(number[16]) % 2 == 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each effect (30)")
    parser.add_argument("--only", choices=SCENARIOS, help="play one scenario")
    parser.add_argument(
        "--ack-seconds", type=float, default=15.0, help="the keypress scenario's acknowledgement deadline (15)"
    )
    args = parser.parse_args(argv)
    from tools.suite import load_dev_secrets

    load_dev_secrets()
    amqp_uri = os.environ.get("AMQP_URI") or DEFAULT_AMQP_URI
    demo = Demo(amqp_uri, args.timeout, ack_seconds=args.ack_seconds)
    failures = []
    try:
        try:
            district = demo.district()
        except (OSError, RpcTimeout, UnknownService, AMQPError) as exc:
            console.print(
                f"[red]Cannot reach the suite at {amqp_uri} ({type(exc).__name__}: {exc}): start it with "
                "`make run` in another terminal (same AMQP_URI) and try again.[/]"
            )
            return 2
        if district is None:
            console.print(
                f"[red]No demo district ({DISTRICT_CODE}) in the grid at {amqp_uri}: start the suite with "
                "`make run` (it seeds the district) and try again.[/]"
            )
            return 2
        demo.log(f"Demo district [bold]{district['name']}[/] (unit {district['id']}) at {amqp_uri}")
        for name in SCENARIOS:
            if args.only in (None, name):
                try:
                    getattr(demo, name)(district)
                except Failed as exc:
                    demo.log(f"[bold red]✗ FAILED:[/] {exc}")
                    failures.append(f"{name}: {exc}")
                except RemoteError as exc:
                    demo.log(f"[bold red]✗ FAILED:[/] {exc.exc_type}: {exc.value}")
                    failures.append(f"{name}: {exc.exc_type}: {exc.value}")
    finally:
        demo.close()
    console.print()
    if failures:
        console.print(Panel("\n".join(failures), title="[red]demo failed", border_style="red", expand=False))
        return 1
    played = f"the {args.only} scenario" if args.only else "all three scenarios"
    console.print(Panel(f"{played} played through", title="[green]demo passed", border_style="green", expand=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
