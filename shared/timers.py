"""A nameko timer whose interval comes from the service's config (tests shorten it)."""

from nameko.timer import Timer


class ConfigTimer(Timer):
    interval: float  # seconds; nameko's Timer sets it

    def __init__(self, config_key, default, **kwargs):
        self.config_key = config_key
        super().__init__(interval=default, **kwargs)

    def setup(self):
        self.interval = float(self.container.config.get(self.config_key, self.interval))
        super().setup()


config_timer = ConfigTimer.decorator
