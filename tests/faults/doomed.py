"""A service whose container can be made to die on demand, for the runner's tests with the broker away.

``GET /die`` lights a fuse: a thread the container manages raises, which is how a bug in an
extension (or nameko's own reply publishing, before shared.rpc) kills a container. It is an HTTP
entrypoint so that it can be reached while the broker is down.
"""

from eventlet.event import Event
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.web.handlers import http


class Fuse(DependencyProvider):
    """A managed thread that raises once the fuse is lit."""

    def setup(self):
        self.lit = Event()

    def start(self):
        self.container.spawn_managed_thread(self._burn, identifier="fuse")

    def _burn(self):
        self.lit.wait()
        raise RuntimeError("the fuse blew")

    def get_dependency(self, worker_ctx):
        return self.lit


class Doomed:
    name = "doomed"
    fuse = Fuse()

    @rpc
    def ping(self):
        return "pong"

    @http("GET", "/die")
    def die(self, request):
        if not self.fuse.ready():
            self.fuse.send(True)
        return "lit"

    @http("GET", "/healthz")
    def healthz(self, request):
        return "alive"
