"""Serve one or more services: what `nameko run` does, with a stop that is never lost and is bounded.

    python -m shared.runner --config services/grid/config.yml services.grid.service:GridService

Gaps in `nameko run` (2.14) this fills:

- A SIGTERM that arrives while the containers are still starting is lost. nameko's handler stops
  the half-started container at once (nothing to stop yet), the start then completes, and the
  process serves on, deaf to the signal, until Kubernetes' SIGKILL. On a loaded node start-up
  takes long enough for this to happen (seen: a pod not stopping within 30 s). Here a stop waits
  for the start to finish, then stops.
- A graceful stop waits for every running worker without limit. Here it has ``STOP_TIMEOUT``
  seconds (default 45: Kubernetes gives the pods 60, 5 of them spent in preStop); then the
  containers are killed. Nothing is lost by that: a message whose worker did not finish was never
  acknowledged and goes back to its queue for another replica (handlers deduplicate), and an
  event is in the outbox until it is published.
- A container that dies (an extension's thread raised) made `nameko run` stop the others without
  a bound and exit — or, if that stop hung (a consumer reconnecting to a broker that is away),
  left a process that served /healthz but nothing else. Here the death is logged, the rest stops
  within ``STOP_TIMEOUT`` and the process exits non-zero (``EXIT_DIED``), so it is restarted.
  Losing the broker kills no container (shared.reconnect, shared.rpc, shared.handlers); this is
  the net under what nothing foresaw.
- Output before logging is configured (dependency warnings, import errors) is not JSON. Here the
  config's ``LOGGING`` is applied first, warnings go through logging, and a start-up failure is
  one log line: a missing secret names the variables and how to load the local ones; a setting a
  service's ``check_config`` refuses (notices: a gateway URL outside its outbound policy) names it.
"""

import argparse
import errno
import gc
import logging
import logging.config
import os
import signal
import sys

import eventlet

import shared  # noqa: F401  (quiets eventlet's and pkg_resources' import-time warnings)

eventlet.monkey_patch()  # before nameko and the services import socket, threading, time

import yaml  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from nameko.utils.concurrency import SpawningProxy  # noqa: E402

from shared import auth, pii, reconnect  # noqa: E402

reconnect.install()  # consumers reconnect soon after the broker returns, and stop while it is away

log = logging.getLogger("shared.runner")

STOP_TIMEOUT_KEY = "STOP_TIMEOUT"
DEFAULT_STOP_TIMEOUT = 45.0
KILL_TIMEOUT = 5.0
# Settings a service cannot run without; none has a default, so an unset variable reads as empty.
REQUIRED_SECRETS = (auth.SECRET_ENV, pii.KEY_ENV)
EXIT_CONFIG = 2
EXIT_KILLED = 1
EXIT_DIED = 3  # a container died: the process ends so that its supervisor starts it afresh


class StartupError(Exception):
    """A service cannot start; the message says why in one line."""


def load_config(path):
    """The YAML config with ``${VAR:default}`` read from the environment, as `nameko run` reads it."""
    from nameko.cli.main import setup_yaml_parser  # imports pkg_resources: quiet after `import shared`

    setup_yaml_parser()
    with open(path) as source:
        return yaml.safe_load(source) or {}


def configure_logging(config):
    logging.captureWarnings(True)  # a warning becomes a log line, not free text in a JSON log
    if "LOGGING" in config:
        logging.config.dictConfig(config["LOGGING"])
        log.disabled = False  # a config without disable_existing_loggers: false would mute the runner
    else:
        from shared.logs import configure, skip_record_lookups

        configure()
        skip_record_lookups()


def missing_secrets(config):
    return [key for key in REQUIRED_SECRETS if key in config and not config[key]]


def check_config(config):
    missing = missing_secrets(config)
    if missing:
        raise StartupError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            "for a local run load the ones `make run` generated with `set -a; . var/dev.env; set +a`, "
            "elsewhere set them from your secret store"
        )
    try:
        reconnect.max_interval(config)  # read again on each reconnect: refused here, not there
    except ValueError as refused:
        raise StartupError(str(refused)) from None


def check_services(classes, config):
    """A service class may refuse its config before anything starts: its ``check_config(config)``
    raises ValueError with a one-line reason (e.g. notices: a gateway URL its policy refuses)."""
    for cls in classes:
        check = getattr(cls, "check_config", None)
        if check is None:
            continue
        try:
            check(config)
        except ValueError as refused:
            raise StartupError(f"{getattr(cls, 'name', cls.__name__)}: {refused}") from None


def import_services(paths):
    """Service classes from ``module:Class`` paths."""
    classes = []
    for path in paths:
        module_name, _, class_name = path.partition(":")
        if not class_name:
            raise StartupError(f"{path!r}: name the class too, as module:Class")
        module = __import__(module_name, fromlist=[class_name])
        try:
            classes.append(getattr(module, class_name))
        except AttributeError:
            raise StartupError(f"{module_name} has no {class_name}") from None
    return classes


class GracefulRunner:
    """A ServiceRunner whose stop waits for the start and is bounded by ``stop_timeout`` seconds."""

    def __init__(self, service_classes, config, stop_timeout):
        self.runner = ServiceRunner(config)
        for cls in service_classes:
            self.runner.add_service(cls)
        self.stop_timeout = stop_timeout
        self.started = eventlet.event.Event()
        self.stopping = False
        self.exit_status = 0

    def start(self):
        self.runner.start()
        self.started.send(True)

    def request_stop(self, signum=None, frame=None):
        """Signal handler: signal handlers may not block on eventlet primitives, so spawn the stop."""
        if self.stopping:
            eventlet.spawn_n(self.kill, "a second stop signal")  # as nameko: the second one kills
        else:
            self.stopping = True
            eventlet.spawn_n(self.stop)

    def stop(self):
        with eventlet.Timeout(self.stop_timeout, False):
            self.started.wait()  # a half-started container would start serving after its stop
            log.info("stopping")
            self.runner.stop()
            return
        self.kill(f"the graceful stop took over {self.stop_timeout:g} s")

    def kill(self, why):
        log.warning("killing the services: %s; unfinished messages return to their queues", why)
        self.exit_status = EXIT_KILLED
        with eventlet.Timeout(KILL_TIMEOUT, False):
            self.runner.kill()
        # The process ends here even if a start still hangs (a broker that never answered).
        logging.shutdown()
        os._exit(EXIT_KILLED)

    def wait(self):
        # A signal interrupting the hub's wait surfaces as EINTR in this greenlet (see `nameko run`).
        waiter = eventlet.spawn(self._wait_containers)
        while True:
            try:
                return waiter.wait()
            except OSError as exc:
                if exc.errno != errno.EINTR:
                    raise

    def _wait_containers(self):
        """Until every container has stopped; a container's death stops the rest, within the bound."""
        try:
            SpawningProxy(self.runner.containers, abort_on_error=True).wait()
        except Exception as exc:
            # nameko's ServiceRunner.wait would stop the others without a bound, then re-raise.
            log.critical(
                "a service container died; stopping the process so that it is started afresh",
                exc_info=True,
                extra={"error_type": type(exc).__name__},
            )
            self.exit_status = EXIT_DIED
            if not self.stopping:
                self.stopping = True
                self.stop()  # kills (and exits) past the stop timeout


def serve(service_classes, config, stop_timeout=None):
    if stop_timeout is None:
        stop_timeout = float(config.get(STOP_TIMEOUT_KEY) or DEFAULT_STOP_TIMEOUT)
    runner = GracefulRunner(service_classes, config, stop_timeout)
    # Installed before the start, like nameko's: a SIGTERM during the start is kept, not lost.
    signal.signal(signal.SIGTERM, runner.request_stop)
    signal.signal(signal.SIGINT, runner.request_stop)
    runner.start()
    # What start-up made (modules, schemas, mappers, the containers) lives as long as the process: moved
    # out of the collector's reach, full collections walk only what the work allocates. Measured in the
    # notices fan-out bench: notices 2.5 -> 1.8 CPU-s, grid 0.6 -> 0.4 (bench/README.md).
    gc.freeze()
    log.info("started", extra={"service": ",".join(runner.runner.service_names)})
    runner.wait()
    return runner.exit_status


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m shared.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the service's YAML config (reads ${VAR:default})")
    parser.add_argument(
        "--stop-timeout",
        type=float,
        help=f"seconds (default: config {STOP_TIMEOUT_KEY}, else {DEFAULT_STOP_TIMEOUT:g})",
    )
    parser.add_argument("services", nargs="+", metavar="module:Class")
    args = parser.parse_args(argv)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `nameko run`: services import from the working directory
    config = load_config(args.config)
    configure_logging(config)
    try:
        check_config(config)
        classes = import_services(args.services)
        check_services(classes, config)
    except StartupError as refused:
        log.error("cannot start: %s", refused)
        return EXIT_CONFIG
    except Exception:
        log.exception("cannot import the services")
        return 1
    try:
        return serve(classes, config, args.stop_timeout)
    except Exception:
        log.exception("the services failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
