"""What an RPC method answers, declared once: ``@endpoint(..., returns=...)``.

A method returns its domain objects; the endpoint dumps them with the declared reply schema, so no
method builds its answer by hand and the AsyncAPI document and the RPC reference show each reply's
real shape (tools/asyncapi.py reads the contract). The dump runs with the caller in marshmallow's
context, so a reply whose shape depends on who asks (staff see more than a volunteer) says so:

    returns=OneOf(STAFF_REQUEST, REQUEST, choose=lambda caller, request: ...)   # the whole reply
    tasks = fields.List(Choice(REQUEST_VIEW))                                     # one field of it
    returns=page(VolunteerOut)                                                    # a paged list
"""

from marshmallow import Schema, fields
from marshmallow.experimental.context import Context


def current_caller():
    """The caller whose reply is being dumped (None outside an endpoint's dump)."""
    return Context[dict].get(default={}).get("caller")


def _instance(schema):
    return schema() if isinstance(schema, type) else schema


class OneOf:
    """A reply (or one value within it) with more than one shape: ``choose(caller, value)`` returns
    the schema that applies; ``schemas`` lists every possible one (the documents show them all)."""

    def __init__(self, *schemas, choose):
        self.schemas = tuple(_instance(s) for s in schemas)
        self.choose = choose

    def dump(self, value):
        schema = self.choose(current_caller(), value)
        if schema not in self.schemas:
            raise ValueError(f"{schema!r} is not one of the declared reply schemas")
        return schema.dump(value)


class Choice(fields.Field):
    """A field dumped with the ``OneOf`` schema chosen for the caller and that value."""

    def __init__(self, one_of, **kwargs):
        super().__init__(**kwargs)
        self.one_of = one_of

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else self.one_of.dump(value)


class Nothing(Schema):
    """No content: the method succeeded and has nothing to tell."""


NOTHING = Nothing()


def _item_field(item):
    if isinstance(item, OneOf):
        return Choice(item)
    return fields.Nested(_instance(item))


def page(item, name=None):
    """The reply schema of a paged list of ``item`` (a schema or a ``OneOf``): what
    ``shared.validation.page_of`` builds."""
    first = item.schemas[0] if isinstance(item, OneOf) else _instance(item)
    base = type(first)
    name = name or f"{base.__name__.removesuffix('Out')}Page"
    cls = type(
        name,
        (Schema,),
        {
            "__doc__": "One page of a list, in the list's order; ``has_more``: a next page exists.",
            "__module__": base.__module__,
            "__qualname__": name,
            "items": fields.List(_item_field(item)),
            "page": fields.Integer(),
            "page_size": fields.Integer(),
            "has_more": fields.Boolean(),
        },
    )
    return cls()


def dump_reply(returns, caller, value):
    """``value`` as the JSON-safe reply ``returns`` declares, dumped for ``caller``."""
    with Context({"caller": caller}):
        return returns.dump(value)
