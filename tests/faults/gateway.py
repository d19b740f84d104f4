"""A stub SMS / voice / push gateway on loopback that counts what notices posts to it.

The in-process stub channels of notices (``url: stub``) die with the process they live in, so
they cannot show what a killed notices service posted twice. This one lives in the test process:
it accepts every POST, and counts each message by its ``Idempotency-Key`` header (the delivery id;
a post without the header is counted under the body's ``delivery_id``, and counted as keyless).
"""

import json
import threading
import time
from collections import Counter

import eventlet
from eventlet import wsgi

PATHS = {"sms": "/sms", "voice_call": "/voice", "app_push": "/push"}


class Gateway:
    def __init__(self):
        self.lock = threading.Lock()
        self.posts: list[tuple[str, str, float]] = []  # (path, key, monotonic time)
        self.keyless = 0
        self.mismatched = 0  # a header naming another delivery than the body
        self.socket = eventlet.listen(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = eventlet.spawn(wsgi.server, self.socket, self.app, log_output=False, max_size=2000)

    def url(self, channel):
        return f"http://127.0.0.1:{self.port}{PATHS[channel]}"

    def env(self):
        """The notices settings that send its gateway traffic here (plain HTTP on loopback)."""
        return {
            "NOTICES_SMS_GATEWAY_URL": self.url("sms"),
            "NOTICES_VOICE_GATEWAY_URL": self.url("voice_call"),
            "NOTICES_PUSH_URL": self.url("app_push"),
            "NOTICES_ALLOW_HTTP": "true",
            "NOTICES_OUTBOUND_ALLOWLIST": "127.0.0.1",
        }

    def app(self, environ, start_response):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"null")
        except ValueError:
            body = None
        header = environ.get("HTTP_IDEMPOTENCY_KEY")
        delivery = str(body.get("delivery_id")) if isinstance(body, dict) else None
        with self.lock:
            if header is None:
                self.keyless += 1
            elif delivery is not None and header != delivery:
                self.mismatched += 1
            self.posts.append((environ.get("PATH_INFO", ""), header or delivery or "?", time.monotonic()))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"errcode": 0, "errmsg": "ok"}']

    def keys(self):
        """Counter of delivery keys posted (all channels)."""
        with self.lock:
            return Counter(key for _, key, _ in self.posts)

    def count(self):
        with self.lock:
            return len(self.posts)

    def last_post_age(self):
        """Seconds since the last post (None before any)."""
        with self.lock:
            return time.monotonic() - self.posts[-1][2] if self.posts else None

    def repeats(self):
        """{key: seconds between its first and its last post} of every key posted more than once."""
        first: dict = {}
        last: dict = {}
        with self.lock:
            for _, key, at in self.posts:
                first.setdefault(key, at)
                last[key] = at
        return {key: last[key] - first[key] for key, n in self.keys().items() if n > 1}

    def duplicates(self):
        return sum(n - 1 for n in self.keys().values() if n > 1)

    def stop(self):
        self.thread.kill()
        self.socket.close()
