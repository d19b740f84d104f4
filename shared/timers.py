"""A nameko timer whose interval comes from the service's config (tests shorten it), owning the
unit of work its worker gets: it commits ``self.db`` when the method returns (a failure rolls back,
shared.db), as ``@endpoint`` and the event and command handlers do. Work done in steps commits each
step in the timer method itself; domain code never commits."""

import functools

from nameko.timer import Timer


class ConfigTimer(Timer):
    interval: float  # seconds; nameko's Timer sets it

    def __init__(self, config_key, default, **kwargs):
        self.config_key = config_key
        super().__init__(interval=default, **kwargs)

    def setup(self):
        self.interval = float(self.container.config.get(self.config_key, self.interval))
        super().setup()


def config_timer(config_key, default, **kwargs):
    def decorate(method):
        @functools.wraps(method)
        def tick(self):
            result = method(self)
            self.db.commit()
            return result

        return ConfigTimer.decorator(config_key, default, **kwargs)(tick)

    return decorate
