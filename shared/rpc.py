"""The RPC entrypoint every service uses: nameko's, with cheaper replies.

nameko 2.14 publishes each reply persistent and with publisher confirms: a broker
round trip and a disk write per call, which bought nothing — a reply that is lost
leaves its caller timing out either way, confirmed or not. Replies here are
transient and unconfirmed; requests keep the caller's own settings.
"""

from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.rpc import ReplyListener, Responder, Rpc, RpcConsumer, get_rpc_exchange


class ReplyPublisher(Publisher):
    use_confirms = False
    delivery_mode = NON_PERSISTENT


class ReplyResponder(Responder):
    publisher_cls = ReplyPublisher


class ReplyingRpcConsumer(RpcConsumer):
    def handle_result(self, message, result, exc_info):
        config = self.container.config
        responder = ReplyResponder(
            config[AMQP_URI_CONFIG_KEY],
            get_rpc_exchange(config),
            config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class ServiceRpc(Rpc):
    rpc_consumer = ReplyingRpcConsumer()


class ClassicReplyListener(ReplyListener):
    """A reply queue that is always a classic queue.

    nameko declares its reply queue durable, so on a vhost whose default queue type is quorum
    (production) it would become a replicated quorum queue: a Raft write per reply for a queue
    that exists only to carry answers back to one process.
    """

    def setup(self):
        super().setup()
        self.queue.queue_arguments = {**(self.queue.queue_arguments or {}), "x-queue-type": "classic"}
