"""What the demo seeders (``services/<name>/seed.py``) share: an admin proxy, calls sent in
overlapping batches with a progress bar, and the lookups that turn the demo data's keys (unit
codes, resident phone numbers) back into the grid's ids."""

import contextlib
import json
import os
import time
from collections import deque
from typing import Any

from nameko.standalone.rpc import ClusterRpcProxy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.auth import jwt_secret, mint_token
from tools.demo_data import DISTRICT_CODE

console = Console(highlight=False)
# Ids worth starting from, written by the seeders, read by `make run` on every start.
POINTERS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "var", "demo.json")
WINDOW = 32  # calls in flight at once (a service takes 20 at a time; the rest wait in its queue)


def say(message):
    console.print(f"[bold cyan]\\[grassroots][/] {message}")


def token(sub="demo-seeder", roles=("admin",), unit=None, pii=False, ttl=3600):
    return mint_token(jwt_secret(), sub, list(roles), unit=unit, pii=pii, ttl=ttl)


@contextlib.contextmanager
def proxy(amqp_uri, auth_token=None, timeout=60):
    with ClusterRpcProxy(
        {"AMQP_URI": amqp_uri}, context_data={"auth_token": auth_token or token()}, timeout=timeout
    ) as rpc:
        yield rpc


def progress():
    return Progress(
        TextColumn("  {task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def batch(method, calls, bar=None, label=None, window=WINDOW, errors="raise"):
    """Call ``method(**kwargs)`` for each kwargs in ``calls``, ``window`` at a time; the answers in order.

    With ``errors="keep"`` a failed call's exception takes its place in the answers instead of raising.
    """
    calls = list(calls)
    task = bar.add_task(label or getattr(method, "method_name", "calls"), total=len(calls)) if bar else None
    answers: list[Any] = [None] * len(calls)  # replies, or with errors="keep" exceptions
    pending: deque[tuple[int, Any]] = deque()

    def settle():
        index, reply = pending.popleft()
        try:
            answers[index] = reply.result()
        except Exception as exc:  # RemoteError and friends
            if errors == "raise":
                raise
            answers[index] = exc
        if bar:
            bar.advance(task)

    for index, kwargs in enumerate(calls):
        pending.append((index, method.call_async(**kwargs)))
        if len(pending) >= window:
            settle()
    while pending:
        settle()
    return answers


def find_district(grid):
    """The demo district's unit, or None."""
    page = 1
    while True:
        answer = grid.list_units(level="district", page=page, page_size=500)
        for unit in answer["items"]:
            if unit["code"] == DISTRICT_CODE:
                return unit
        if not answer["has_more"]:
            return None
        page += 1


def district_to_seed(rpc, service, what, already_seeded):
    """The demo district ``service`` seeds under, or None: no district yet, or ``already_seeded(id)``."""
    root = find_district(rpc.grid)
    if root is None:
        say(f"{service}: no demo district in the grid; nothing to seed")
        return None
    if already_seeded(root["id"]):
        say(f"{service}: demo {what} already present")
        return None
    return root


def unit_ids(grid, district_id):
    """Unit code -> id for the whole demo district."""
    ids, page = {}, 1
    while True:
        answer = grid.list_units(under=district_id, include_closed=True, page=page, page_size=500)
        ids.update({u["code"]: u["id"] for u in answer["items"] if u["code"]})
        if not answer["has_more"]:
            break
        page += 1
    ids[DISTRICT_CODE] = str(district_id)
    return ids


def residents_by_phone(amqp_uri, district_id):
    """Phone -> find row (id, household_id, unit_id, tags, ...) for every resident of the district."""
    found, after = {}, None
    with proxy(amqp_uri, token(pii=True)) as rpc:
        while True:
            answer = rpc.grid.find_residents(under=district_id, page_size=1000, after=after)
            found.update({row["phone"]: row for row in answer["items"]})
            after = answer.get("next_after")
            if not after:
                return found


def remember(**pointers):
    """Add ids to the demo's pointers (var/demo.json, beside the local databases)."""
    known = recall()
    known.update({key: str(value) for key, value in pointers.items()})
    os.makedirs(os.path.dirname(POINTERS_PATH), exist_ok=True)
    with open(POINTERS_PATH, "w") as out:
        json.dump(known, out, indent=1, sort_keys=True)


def recall():
    try:
        with open(POINTERS_PATH) as source:
            return json.load(source)
    except (OSError, ValueError):
        return {}


def where_to_start(amqp_uri):
    """The lines `make run` ends with: commands to try on the demo district, with its real ids."""
    known = recall()
    if "district" not in known:  # seeded into a database var/ no longer describes: look it up
        with proxy(amqp_uri) as rpc:
            district = find_district(rpc.grid)
        if district is None:
            return []
        known = {"district": district["id"]}
    cli = ".venv/bin/grassroots"
    campaign = f" --campaign {known['campaign']}" if "campaign" in known else ""
    lines = [f"{cli} tree {known['district']} --depth 2{campaign}    # the district, its streets and communities"]
    if "street" in known:
        lines.append(
            f'{cli} call grid.count_residents \'{{"under": "{known["street"]}", "tags_any": ["elderly_alone"]}}\''
        )
    if "small_grid" in known:
        lines.append(
            f'{cli} call volunteer.list_volunteers \'{{"under": "{known["small_grid"]}"}}\''
            "    # the small grid with the most volunteers"
        )
    lines.append(f"{cli} tail    # events as they happen;  make demo    # three scenarios across the services")
    return lines


class Stopwatch:
    def __init__(self):
        self.started = time.perf_counter()

    def __str__(self):
        return f"{time.perf_counter() - self.started:.1f}s"


def errors_in(answers):
    return [a for a in answers if isinstance(a, Exception)]
