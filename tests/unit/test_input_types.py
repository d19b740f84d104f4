"""Every input field of every contract uses the suite's guarded types (issue 12).

Input = the schema of every RPC method and every event handler (found by the same walk as
docs/asyncapi.yaml), and the event envelope. A plain ``fields.String`` would let NUL or a lone
surrogate reach PostgreSQL, a plain ``fields.Date``/``DateTime`` a year the database cannot hand
back, a non-strict ``fields.Integer`` would turn 1.5 into 1: a new field of those kinds fails here.
"""

import pytest
from marshmallow import fields

from shared import validation
from shared.endpoints import EnvelopeSchema
from tools import asyncapi


def input_schemas():
    found = [("envelope", EnvelopeSchema())]
    for service, cls in asyncapi.service_classes().items():
        rpcs, handlers, _ = asyncapi.entrypoints(cls)
        for name, contract in rpcs + handlers:
            if contract["schema"] is not None:
                found.append((f"{service}.{name}", contract["schema"]))
    return found


def problems(field, where):
    """Why ``field`` (at ``where``) is not a guarded input type; [] when it is."""
    if isinstance(field, fields.Nested):
        schema = field.schema
        return [p for name, inner in schema.fields.items() for p in problems(inner, f"{where}.{name}")]
    if isinstance(field, fields.List):
        return problems(field.inner, f"{where}[]")
    if isinstance(field, fields.Tuple):
        return [p for i, inner in enumerate(field.tuple_fields) for p in problems(inner, f"{where}[{i}]")]
    if isinstance(field, fields.Dict):
        found = []
        for part, inner in (("key", field.key_field), ("value", field.value_field)):
            if inner is not None:
                found += problems(inner, f"{where}{{{part}}}")
        return found
    if isinstance(field, fields.String) and not isinstance(field, validation.Text):
        return [f"{where}: a string that is not shared.validation.Text/Str (NUL and lone surrogates pass)"]
    if isinstance(field, fields.Integer) and not field.strict:
        return [f"{where}: an integer without strict=True (1.5 and '2' are coerced)"]
    if isinstance(field, fields.Number) and not isinstance(field, fields.Integer):
        return [f"{where}: a float/decimal (no input takes one; NaN and inf would pass)"]
    if isinstance(field, fields.DateTime) and not isinstance(field, validation.UtcDateTime):
        return [f"{where}: a timestamp that is not shared.validation.UtcDateTime (unbounded year)"]
    if isinstance(field, fields.Date) and not isinstance(field, validation.Date):
        return [f"{where}: a date that is not shared.validation.Date (unbounded year)"]
    return []


SCHEMAS = input_schemas()


def test_the_walk_finds_the_contracts():
    names = {name for name, _ in SCHEMAS}
    assert {"grid.create_unit", "notices.create_notice", "legal.find_slots", "volunteer.create_request"} <= names
    assert any(name.endswith("on_incident_reported") for name in names)


@pytest.mark.parametrize("name,schema", SCHEMAS, ids=[name for name, _ in SCHEMAS])
def test_every_input_field_is_a_guarded_type(name, schema):
    instance = schema() if isinstance(schema, type) else schema
    found = [p for field_name, field in instance.fields.items() for p in problems(field, f"{name}.{field_name}")]
    assert found == []
