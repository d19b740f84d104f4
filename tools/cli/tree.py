"""``grassroots tree <unit_id>``: a unit's subtree with residents, screening coverage and open
incidents per unit, composed from existing grid RPCs (no RPC of its own).

- units: ``get_unit`` for the root, ``list_units(under, level)`` for each level shown;
- residents: ``count_residents(under=unit)`` for every unit shown (a few calls in flight at once);
- households and screening coverage: ``screening_progress(campaign, level)`` once per level, only
  with ``--campaign`` (the grid has no RPC listing campaigns, so none is picked by itself);
- incidents: ``list_incidents(under=root, status=open|escalated)`` paged once, each counted in
  every shown unit above where it was reported ("open" counts the escalated ones too: unresolved).

``--depth N`` counts levels (district → street is one), so a unit whose parent level was skipped
still shows at its own level.
"""

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text
from rich.tree import Tree

from services.grid.vocabulary import LEVELS
from tools.cli import CliError
from tools.cli.connect import DEFAULT_TIMEOUT, add_amqp_option, amqp_uri, rpc_proxy, unreachable
from tools.cli.tokens import add_caller_options, caller_token

PAGE_SIZE = 500  # the grid's largest page
IN_FLIGHT = 16  # concurrent per-unit calls
OPEN_STATUSES = ("open", "escalated")
DEFAULT_DEPTH = 2
UNWRAPPED_WIDTH = 1000


@dataclass
class UnitStats:
    residents: int | None = None
    households: int | None = None
    visited: int | None = None
    coverage: float | None = None
    incidents: dict = field(default_factory=lambda: dict.fromkeys(OPEN_STATUSES, 0))


@dataclass
class Subtree:
    root: dict
    units: list  # unit dicts as the grid returns them, the root first
    stats: dict  # unit id -> UnitStats
    depth: int
    campaign: dict | None = None  # {"id", "title"} when coverage was asked for
    show_residents: bool = True
    show_incidents: bool = True
    notes: list = field(default_factory=list)


def add_tree_command(commands):
    parser = commands.add_parser(
        "tree",
        help="show a unit's subtree with residents, coverage and open incidents",
        description="Show a unit's subtree: per unit its level, name, residents, screening coverage "
        "(with --campaign) and unresolved incidents (open / escalated) in its subtree.",
    )
    parser.add_argument("unit_id", help="the unit at the top")
    parser.add_argument(
        "--depth",
        type=int,
        default=DEFAULT_DEPTH,
        help=f"levels to show below the unit (default {DEFAULT_DEPTH}; 5 shows a whole district)",
    )
    parser.add_argument(
        "--campaign", metavar="ID", help="screening campaign for households and coverage (omitted without it)"
    )
    parser.add_argument("--include-closed", action="store_true", help="show closed units too")
    add_caller_options(parser)
    add_amqp_option(parser)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for each reply")
    parser.set_defaults(handler=run_tree)


def run_tree(args, out, err):
    if args.depth < 0:
        raise CliError("--depth must be 0 or more")
    uri = amqp_uri(args)
    with rpc_proxy(uri, caller_token(args), timeout=args.timeout) as rpc, walk_progress(err) as progress:
        try:
            subtree = collect(
                rpc.grid,
                args.unit_id,
                args.depth,
                campaign_id=args.campaign,
                include_closed=args.include_closed,
                progress=progress,
            )
        except Exception as exc:
            problem = unreachable(exc, "grid", args.timeout)
            if problem is None:
                raise
            raise problem from None
    if not out.is_terminal:  # a terminal wraps long lines to fit; a pipe or a file gets them whole
        out = Console(file=out.file, width=UNWRAPPED_WIDTH, highlight=False, no_color=out.no_color)
    out.print(render(subtree))
    out.print(summary(subtree))
    for note in subtree.notes:
        err.print(Text(note, style="dim"))
    return 0


def walk_progress(console):
    """A progress display on stderr, only when it is a terminal (its tasks are no-ops otherwise)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


# ---- gathering ---------------------------------------------------------------


def collect(grid, root_id, depth, campaign_id=None, include_closed=False, progress=None):
    """Everything the tree shows, from the grid proxy ``grid`` (``rpc.grid``)."""
    from shared.errors import Forbidden

    progress = progress or Progress(disable=True)
    root = grid.get_unit(unit_id=root_id)
    units = [root] + list_levels(grid, root, depth, include_closed, progress)
    subtree = Subtree(root=root, units=units, stats={u["id"]: UnitStats() for u in units}, depth=depth)
    try:
        count_residents(grid, subtree, progress)
    except Forbidden:
        subtree.show_residents = False
        subtree.notes.append("residents: this token's role may not count residents")
    if campaign_id is not None:
        add_coverage(grid, subtree, campaign_id, progress)
    try:
        count_incidents(grid, subtree, progress)
    except Forbidden:
        subtree.show_incidents = False
        subtree.notes.append("incidents: this token's role may not list incidents")
    return subtree


def levels_below(level, depth):
    start = LEVELS.index(level) + 1
    return list(LEVELS[start : start + depth])


def pages(method, progress, task, **kwargs):
    page = 1
    while True:
        answer = method(page=page, page_size=PAGE_SIZE, **kwargs)
        progress.advance(task, len(answer["items"]))
        yield from answer["items"]
        if not answer["has_more"]:
            return
        page += 1


def list_levels(grid, root, depth, include_closed, progress):
    task = progress.add_task("units", total=None)
    units = []
    for level in levels_below(root["level"], depth):
        units += pages(grid.list_units, progress, task, under=root["id"], level=level, include_closed=include_closed)
    progress.update(task, total=len(units))
    return units


def in_flight(method, kwargs_list, window=IN_FLIGHT):
    """Call ``method`` for each kwargs, a few at a time; yields (kwargs, result) in order."""
    pending: deque[tuple[dict, Any]] = deque()  # (kwargs, the reply to come)
    for kwargs in kwargs_list:
        pending.append((kwargs, method.call_async(**kwargs)))
        if len(pending) >= window:
            kwargs, reply = pending.popleft()
            yield kwargs, reply.result()
    while pending:
        kwargs, reply = pending.popleft()
        yield kwargs, reply.result()


def count_residents(grid, subtree, progress):
    task = progress.add_task("residents", total=len(subtree.units))
    for kwargs, answer in in_flight(grid.count_residents, [{"under": u["id"]} for u in subtree.units]):
        subtree.stats[kwargs["under"]].residents = answer["count"]
        progress.advance(task)


def add_coverage(grid, subtree, campaign_id, progress):
    from shared.errors import ValidationError

    # Deepest level first: the levels a campaign reports on run from its own unit's level down, so
    # the first level refused ("above the campaign's level") ends the walk.
    levels = [subtree.root["level"]] + levels_below(subtree.root["level"], subtree.depth)
    task = progress.add_task("coverage", total=len(levels))
    title = None
    for level in reversed(levels):
        try:
            answer = grid.screening_progress(campaign_id=campaign_id, level=level)
        except ValidationError as exc:
            if "level" not in exc.fields:
                raise
            break
        finally:
            progress.advance(task)
        title = answer["title"]
        for row in answer["units"]:
            stats = subtree.stats.get(row["unit_id"])
            if stats is not None:
                stats.households, stats.visited = row["households"], row["visited"]
                stats.coverage = row["coverage_percent"]
    if title is None:
        subtree.notes.append(f"coverage: campaign #{campaign_id} covers none of the levels shown")
    else:
        subtree.campaign = {"id": str(campaign_id), "title": title}


def count_incidents(grid, subtree, progress):
    from nameko.exceptions import RemoteError

    task = progress.add_task("incidents", total=None)
    incidents = [
        incident
        for status in OPEN_STATUSES
        for incident in pages(grid.list_incidents, progress, task, under=subtree.root["id"], status=status)
    ]
    progress.update(task, total=len(incidents))
    paths = {unit["id"]: unit["path"] for unit in subtree.units}
    unknown = sorted({i["unit_id"] for i in incidents} - set(paths), key=int)
    if unknown:  # reported deeper than the tree shows: where are they?
        lookup = progress.add_task("incident units", total=len(unknown))
        for unit_id in unknown:
            try:
                paths[unit_id] = grid.get_unit(unit_id=unit_id)["path"]
            except RemoteError:
                paths[unit_id] = [subtree.root["id"]]  # moved or closed meanwhile: count it at the top
            progress.advance(lookup)
    for incident in incidents:
        for unit_id in paths[incident["unit_id"]]:
            stats = subtree.stats.get(str(unit_id))
            if stats is not None:
                stats.incidents[incident["status"]] = stats.incidents.get(incident["status"], 0) + 1


# ---- rendering -----------------------------------------------------------------


def coverage_style(percent):
    return "green" if percent >= 90 else "yellow" if percent >= 50 else "red"


def plural(count, word):
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def unit_label(unit, stats, subtree):
    label = Text()
    label.append(unit["name"], style="bold")
    label.append(f"  {unit['level']} #{unit['id']}", style="cyan")
    if unit.get("closed"):
        label.append(" (closed)", style="dim")
    parts = []
    if subtree.show_residents and stats.residents is not None:
        parts.append(Text(plural(stats.residents, "resident")))
    if stats.households is not None:
        parts.append(Text(plural(stats.households, "household")))
        if stats.households:
            parts.append(
                Text.assemble(
                    "screened ",
                    (f"{stats.visited:,}/{stats.households:,} {stats.coverage:g}%", coverage_style(stats.coverage)),
                )
            )
    if subtree.show_incidents:
        opened, escalated = stats.incidents.get("open", 0), stats.incidents.get("escalated", 0)
        if opened or escalated:
            text = plural(opened + escalated, "open incident") + (f" ({escalated} escalated)" if escalated else "")
            parts.append(Text(text, style="bold red"))
        else:
            parts.append(Text("no open incidents", style="dim"))
    for part in parts:
        label.append("  ·  ", style="dim")
        label.append_text(part)
    return label


def display_parent(unit, shown):
    """The nearest shown ancestor (a unit's own parent may be closed and hidden)."""
    for ancestor in reversed([str(i) for i in unit["path"][:-1]]):
        if ancestor in shown:
            return ancestor
    return None


def render(subtree):
    """The subtree as a ``rich.tree.Tree`` (children by name)."""
    shown = {unit["id"] for unit in subtree.units}
    children: dict[str, list[dict]] = {}
    for unit in subtree.units[1:]:
        children.setdefault(display_parent(unit, shown) or subtree.root["id"], []).append(unit)
    tree = Tree(unit_label(subtree.root, subtree.stats[subtree.root["id"]], subtree), guide_style="dim")
    stack = [(tree, subtree.root["id"])]
    while stack:
        node, unit_id = stack.pop()
        for child in sorted(children.get(unit_id, []), key=lambda u: (u["name"].casefold(), int(u["id"]))):
            stack.append((node.add(unit_label(child, subtree.stats[child["id"]], subtree)), child["id"]))
    return tree


def summary(subtree):
    text = Text(style="dim")
    below = len(subtree.units) - 1
    levels = levels_below(subtree.root["level"], subtree.depth)
    text.append(f"{below:,} unit{'s' if below != 1 else ''} below {subtree.root['name']}")
    if levels:
        text.append(f" (levels {levels[0]}…{levels[-1]})" if len(levels) > 1 else f" (level {levels[0]})")
    if subtree.campaign:
        title = subtree.campaign["title"]
        text.append(f"; coverage from campaign #{subtree.campaign['id']}" + (f" “{title}”" if title else ""))
    return text
