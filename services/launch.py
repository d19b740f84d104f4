"""The container image's entrypoint: one service per container, named on the command line.

    python -m services.launch run <service>       # exec the service runner (shared.runner) on its config
    python -m services.launch migrate <service>   # alembic upgrade head (shared/migrate.py; advisory-locked)

The settings come from the environment that services/<service>/config.yml reads (``${VAR:default}``),
in Kubernetes from the service's ConfigMap and Secrets (k8s/base/<service>/).
"""

import argparse
import os
import sys
from urllib.parse import quote

from services import registry

# The repo root (the directory holding services/): the runner imports the service module by name.
ROOT = os.path.dirname(registry.HERE)


def run_argv(service):
    """The command line serving ``service`` (absolute paths: it does not depend on the cwd).

    shared.runner is `nameko run` with a stop that a start cannot swallow and that is bounded.
    """
    entry = registry.get(service)
    return [sys.executable, "-m", "shared.runner", "--config", entry.config_path, entry.spec]


def credential_urls(service):
    """(URL variable, username variable, password variable) that Kubernetes assembles by `$(VAR)`
    interpolation (k8s/base/<service>/deployment.yaml)."""
    return (
        ("AMQP_URI", "AMQP_USERNAME", "AMQP_PASSWORD"),
        (f"{service.upper()}_DATABASE_URL", "DB_USERNAME", "DB_PASSWORD"),
    )


def quote_credentials(environ, service):
    """The environment with the credentials inside those URLs percent-encoded.

    Kubernetes pastes Secret values into a URL as they are, and the Messaging Topology Operator
    generates base64 user names and passwords: a '/' there would end the URL's authority early.
    kombu and SQLAlchemy decode percent-escapes, so the encoded URL means the same credentials.
    Only a URL that starts with exactly those credentials is touched.
    """
    env = dict(environ)
    for url_var, user_var, password_var in credential_urls(service):
        url, user, password = env.get(url_var), env.get(user_var), env.get(password_var)
        if not url or user is None or password is None:
            continue
        scheme, sep, rest = url.partition("://")
        raw = f"{user}:{password}@"
        if sep and rest.startswith(raw):
            env[url_var] = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest[len(raw) :]}"
    return env


def run_env(service, environ=None):
    env = quote_credentials(os.environ if environ is None else environ, service)
    # The runner imports the service module by name: the repo root must be importable.
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in paths if p != ROOT])
    return env


def run(service):
    argv = run_argv(service)
    os.chdir(ROOT)
    sys.stdout.flush()
    # exec, not a child process: the runner becomes the container's main process and gets SIGTERM
    # itself, which stops it gracefully (running workers finish, consumers are cancelled).
    os.execve(argv[0], argv, run_env(service))


def migrate(service):
    entry = registry.get(service)
    os.environ.update(quote_credentials(os.environ, service))
    print(f"{service}: migrating to head", flush=True)
    entry.migrate()
    print(f"{service}: migrated to head", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m services.launch", description="Run or migrate one Grassroots service."
    )
    parser.add_argument("command", choices=["run", "migrate"])
    parser.add_argument("service", help="one of: " + ", ".join(registry.NAMES))
    args = parser.parse_args(argv)
    try:
        registry.get(args.service)
    except registry.UnknownService as refused:
        parser.error(str(refused))  # usage + message, exit status 2
    if args.command == "run":
        run(args.service)
    else:
        migrate(args.service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
