"""Load that spans a broker outage, and probes of the services' health while it lasts.

nameko's standalone ClusterRpcProxy cannot be used again once its connection broke ("This consumer
has been disconnected"), so ``Client`` replaces its proxy after any failure and retries the same
call — the same arguments and idempotency key — until it is answered: what a careful caller of the
suite does. ``Load`` runs, in green threads until ``stop()``:

- readers: ``grid.get_unit`` in a loop (the RPC traffic of the fault run);
- writers: ``grid.report_incident``, each a dispute between two residents with its own description
  and idempotency key (the callers' writes, each identified: one incident each, and one mediation
  case in legal for each);
- a tagger: the population's residents tagged ``quarantined`` one by one at a steady pace, so that
  tags are sent before, during and after the outage (the event flow: notices' instructions,
  volunteer's care requests and offers).

``HealthProbes`` asks every service's /readyz and /healthz once a second and keeps the answers;
``caller_tallies`` counts what the writers' calls left behind.
"""

import contextlib
import time
import uuid
from collections import Counter

import eventlet
from nameko.standalone.rpc import ClusterRpcProxy

from shared.errors import CLIENT_ERRORS
from tests.faults import effects
from tests.faults.report import Tally
from tests.faults.scenario import in_two_weeks
from tests.faults.suite import admin_token

CALL_TIMEOUT = 10  # seconds a call may wait for its reply before it is sent again
RETRY_PAUSE = 0.5


class Client:
    """Calls one service method at a time through a ClusterRpcProxy it replaces after any failure."""

    def __init__(self, amqp_uri, token=None, timeout=CALL_TIMEOUT):
        self.config = {"AMQP_URI": amqp_uri}
        self.token = token or admin_token()
        self.timeout = timeout
        self.proxy = None
        self.rpc = None
        self.failures = 0

    def call(self, service, method, deadline_s=600, **kwargs):
        """The reply of ``service.method(**kwargs)``, retried until answered; typed client errors
        (ValidationError, Conflict, …) are answers and raised, as is the last failure past the deadline."""
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                if self.rpc is None:
                    self.proxy = ClusterRpcProxy(
                        self.config, context_data={"auth_token": self.token}, timeout=self.timeout
                    )
                    self.rpc = self.proxy.start()
                return getattr(getattr(self.rpc, service), method)(**kwargs)
            except CLIENT_ERRORS:
                raise
            except Exception:
                self.failures += 1
                self.close()
                if time.monotonic() > deadline:
                    raise
                eventlet.sleep(RETRY_PAUSE)

    def close(self):
        proxy, self.proxy, self.rpc = self.proxy, None, None
        if proxy is not None:
            with contextlib.suppress(Exception):  # its connection is already gone
                proxy.stop()


class Load:
    """Readers, writers and a tagger (see the module docstring) until ``stop()``."""

    def __init__(self, amqp_uri, people, prefix, readers=3, writers=2, tag_interval=0.25):
        self.amqp_uri = amqp_uri
        self.people = people
        self.prefix = prefix
        self.readers, self.writers, self.tag_interval = readers, writers, tag_interval
        self.stopping = False
        self.threads = []
        self.reads: Counter = Counter()  # answered reads per reader
        self.last_read = {}  # reader: time.monotonic() of its last answered read
        self.written = []  # descriptions of answered writes
        self.tagged = []  # residents whose tag was answered
        self.failures: Counter = Counter()  # failed attempts (later retried) per kind

    def start(self):
        self.threads += [eventlet.spawn(self._read, n) for n in range(self.readers)]
        self.threads += [eventlet.spawn(self._write, n) for n in range(self.writers)]
        self.threads.append(eventlet.spawn(self._tag))
        return self

    def stop(self):
        """Stop after each thread's call in progress is answered; raises what a thread raised."""
        self.stopping = True
        for thread in self.threads:
            thread.wait()

    def kill(self):
        """End the threads now (a failed test's teardown: their calls may wait for a broker that is gone)."""
        self.stopping = True
        for thread in self.threads:
            thread.kill()

    @property
    def sent(self):
        return len(self.written) + len(self.tagged)

    def _read(self, n):
        client = Client(self.amqp_uri)
        unit = self.people.district["small_a"]
        try:
            while not self.stopping:
                client.call("grid", "get_unit", unit_id=unit)
                self.reads[n] += 1
                self.last_read[n] = time.monotonic()
                eventlet.sleep(0.05)
        finally:
            self.failures["read"] += client.failures
            client.close()

    def _write(self, n):
        client = Client(self.amqp_uri)
        street = self.people.district["street"]
        parties = self.people.volunteer_residents[:2]  # never quarantined; they live in the street
        try:
            for i in range(1_000_000):
                if self.stopping:
                    break
                description = f"{self.prefix} dispute {n}-{i}"
                client.call(
                    "grid",
                    "report_incident",
                    unit_id=street,
                    category="dispute",
                    description=description,
                    party_resident_ids=parties,
                    idempotency_key=uuid.uuid4().hex,
                )
                self.written.append(description)
                eventlet.sleep(0.3)
        finally:
            self.failures["write"] += client.failures
            client.close()

    def _tag(self):
        client = Client(self.amqp_uri)
        until = in_two_weeks()
        try:
            for resident in self.people.residents:
                if self.stopping:
                    break
                client.call(
                    "grid",
                    "tag_resident",
                    resident_id=resident,
                    tag="quarantined",
                    until=until,
                    idempotency_key=uuid.uuid4().hex,
                )
                self.tagged.append(resident)
                eventlet.sleep(self.tag_interval)
        finally:
            self.failures["tag"] += client.failures
            client.close()

    def households_tagged(self):
        """The households at least one of whose members was tagged (each is owed the flow's effects)."""
        tagged = set(self.tagged)
        return [h for h in self.people.households if tagged & set(self.people.members[h])]


class HealthProbes:
    """Every service's /readyz and /healthz, asked once a second until ``stop()``."""

    def __init__(self, suite, interval=1.0):
        self.suite = suite
        self.interval = interval
        self.answers = []  # (time.monotonic(), service, /readyz status, /healthz status); None: no answer
        self.running = True
        self.thread = eventlet.spawn(self._loop)

    def _loop(self):
        while self.running:
            for name in self.suite.services:
                ready = self.suite.http_get(name, "/readyz")[0]
                health = self.suite.http_get(name, "/healthz")[0]
                self.answers.append((time.monotonic(), name, ready, health))
            eventlet.sleep(self.interval)

    def stop(self):
        self.running = False
        self.thread.wait()

    def kill(self):
        self.running = False
        self.thread.kill()

    def between(self, start, end):
        return [answer for answer in self.answers if start <= answer[0] <= end]


def caller_tallies(db, load):
    """Each answered write: one incident (by its description) and one mediation case for it."""
    incidents = effects.incidents_by_description(db, load.prefix)
    ids = [i for (i,) in db.rows("grid", "SELECT id FROM incidents WHERE description LIKE :p", p=f"{load.prefix}%")]
    cases = effects.mediation_incidents(db)
    return [
        Tally.of("caller_incidents", load.written, incidents),
        Tally.of("mediation_cases", ids, cases),
    ]


def wait_for(condition, timeout, message):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        eventlet.sleep(0.2)
