"""The one line each fault scenario prints, and its verdict.

    scenario=<name> sent=N effects=N lost=N duplicated=N recovery_s=X

``sent``: the inputs the scenario sent (tags, client calls, events); ``effects``: every effect
observed, copies included; ``lost``: expected effects never seen; ``duplicated``: copies beyond
the first, plus effects nobody asked for; ``recovery_s``: seconds from the end of the last fault
until every expected effect was there (or the deadline, when some never came).

The lines are kept for the run's summary (tests/faults/conftest.py prints them all at the end).
"""

from collections import Counter
from dataclasses import dataclass, field

LINES: list[str] = []


@dataclass
class Tally:
    """One kind of effect: how many were expected, seen, lost and duplicated."""

    name: str
    expected: int = 0
    observed: int = 0
    lost: int = 0
    duplicated: int = 0
    examples: list = field(default_factory=list)  # a few keys lost or duplicated, for the failure message

    @classmethod
    def of(cls, name, expected, observed):
        """From two multisets of effect keys (iterables or Counters): every expected key should be
        seen exactly as many times as it is expected."""
        expected, observed = Counter(expected), Counter(observed)
        lost = duplicated = 0
        examples = []
        for key in expected.keys() | observed.keys():
            missing, extra = expected[key] - observed[key], observed[key] - expected[key]
            if missing > 0:
                lost += missing
                examples.append(f"lost {key}")
            elif extra > 0:
                duplicated += extra
                examples.append(f"{extra}x extra {key}")
        return cls(name, sum(expected.values()), sum(observed.values()), lost, duplicated, sorted(examples)[:5])

    def __str__(self):
        return f"{self.name}: expected={self.expected} observed={self.observed} lost={self.lost} dup={self.duplicated}"


def line(scenario, sent, tallies, recovery_s):
    effects = sum(t.observed for t in tallies)
    lost = sum(t.lost for t in tallies)
    duplicated = sum(t.duplicated for t in tallies)
    return (
        f"scenario={scenario} sent={sent} effects={effects} lost={lost} duplicated={duplicated} "
        f"recovery_s={recovery_s:.1f}"
    )


def report(scenario, sent, tallies, recovery_s, extra_problems=(), info=()):
    """Print the scenario's line (and one detail line per kind of effect), keep it for the summary,
    then fail on any loss or duplicate, or on ``extra_problems`` (e.g. a service that died). ``info``:
    lines that say what the fault was (how many kills, how long down), printed under it."""
    text = line(scenario, sent, tallies, recovery_s)
    LINES.append(text)
    print(f"\n{text}", flush=True)
    for note in info:
        print(f"  {note}", flush=True)
    for tally in tallies:
        print(f"  {tally}" + (f"  e.g. {'; '.join(tally.examples)}" if tally.examples else ""), flush=True)
    problems = [
        str(t) + (f" e.g. {'; '.join(t.examples)}" if t.examples else "") for t in tallies if t.lost or t.duplicated
    ]
    problems += list(extra_problems)
    assert not problems, f"{text}\n" + "\n".join(problems)
    return text
