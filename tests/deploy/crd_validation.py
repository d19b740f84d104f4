"""Offline validation of custom resources against the vendored upstream CRD schemas
(k8s/schemas/<group>/<kind>_<version>.json, see k8s/schemas/SOURCES.md).

A CRD's openAPIV3Schema is a Kubernetes "structural schema": OpenAPI v3 plus `x-kubernetes-*`
extensions, checked by the API server in ways plain JSON Schema does not know. `to_jsonschema`
rewrites it into a JSON Schema (draft 7) that is as strict as
the API server, and stricter where the API server is silent:

- `x-kubernetes-int-or-string: true`: an integer or a string (`anyOf`), whatever `type` says;
  `pattern` and the like still apply to the string form only, as in Kubernetes.
- `x-kubernetes-preserve-unknown-fields: true`: fields the schema does not list are allowed there
  (and in nothing below that does not say so itself).
- An object schema that does not say `additionalProperties` and does not preserve unknown fields
  gets `additionalProperties: false`: the API server *prunes* such fields (a typo or a field of
  another release is silently dropped), so here they are errors, named "unknown field".
  An object without `properties` at all (say `metadata: {type: object}` of an embedded template)
  therefore accepts no field.
- `x-kubernetes-embedded-resource: true`: apiVersion, kind and metadata are allowed there.
- `nullable: true`: null is accepted besides the type.
- `x-kubernetes-list-type: set` items must be unique; `x-kubernetes-list-type: map` items must be
  unique by their `x-kubernetes-list-map-keys` (a missing key counts as its schema default),
  as the API server rejects duplicates.
- `format` int32/int64 are range-checked, date-time must be RFC 3339, byte must be base64.
- Go (RE2) patterns are compiled with Python's `re` in ASCII mode (\\w, \\d, \\s are ASCII in RE2),
  and a flag like `(?i)`, which RE2 allows in the middle, is moved to the front.
- The object's top-level `metadata` (only `type: object` in every CRD: ObjectMeta is checked by
  the API server itself) is checked against ObjectMeta here: `metadata.name` must be present and a
  DNS-1123 subdomain, labels and annotations string maps with valid label keys and values, and no
  field ObjectMeta does not have.
- `x-kubernetes-validations` (CEL rules) are *not* evaluated: no CEL interpreter is used offline.
"""

import base64
import binascii
import copy
import functools
import json
import os
import re

from jsonschema import Draft7Validator, FormatChecker, ValidationError
from jsonschema.validators import extend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(ROOT, "k8s", "schemas")

# API groups served by the Kubernetes API server itself (kube-apiserver and its aggregated
# kube-aggregator); anything else comes from a CRD and needs a vendored schema. Groups that merely
# end in .k8s.io (gateway.networking.k8s.io, snapshot.storage.k8s.io, ...) are CRDs, hence a list.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apiextensions.k8s.io",
        "apiregistration.k8s.io",
        "apps",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "internal.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "resource.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
        "storagemigration.k8s.io",
    }
)

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# [prefix/]name: prefix a DNS-1123 subdomain (<= 253), name <= 63 alphanumerics, '-', '_', '.'
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
        "labels": {
            "type": "object",
            "propertyNames": {"pattern": QUALIFIED_NAME, "maxLength": 317},
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
        },
        "annotations": {
            "type": "object",
            "propertyNames": {"pattern": QUALIFIED_NAME, "maxLength": 317},
            "additionalProperties": {"type": "string"},
        },
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
        "creationTimestamp": {"type": ["string", "null"]},
        "deletionTimestamp": {"type": ["string", "null"]},
        "deletionGracePeriodSeconds": {"type": "integer"},
        "generation": {"type": "integer"},
        "resourceVersion": {"type": "string"},
        "selfLink": {"type": "string"},
        "uid": {"type": "string"},
        "managedFields": {"type": "array"},
    },
}
# an embedded resource's metadata (x-kubernetes-embedded-resource) may leave the name out
EMBEDDED_META = dict(OBJECT_META, required=[])


def group_version(api_version):
    """("apps", "v1") for "apps/v1", ("", "v1") for "v1"."""
    group, _, version = api_version.rpartition("/")
    return group, version


def is_builtin(doc):
    return group_version(doc.get("apiVersion", ""))[0] in BUILTIN_GROUPS


def schema_file(doc):
    """Where the vendored schema of this document's apiVersion and kind lives."""
    group, version = group_version(doc["apiVersion"])
    return os.path.join(SCHEMAS, group, f"{doc['kind'].lower()}_{version}.json")


def describe(doc):
    name = (doc.get("metadata") or {}).get("name", "<no name>")
    return f"{doc.get('kind')} {name} ({doc.get('apiVersion')})"


# --- schema conversion ------------------------------------------------------------------------


def _python_pattern(pattern):
    """A Go RE2 pattern for Python's `re`: \\d \\w \\s and \\b are ASCII-only in RE2, so (?a); RE2 also
    takes flags such as (?i) anywhere, Python only at the start, so they move there."""
    flags = set(re.findall(r"\(\?([imsU]+)\)", pattern))
    body = re.sub(r"\(\?[imsU]+\)", "", pattern) if flags else pattern
    kept = "".join(sorted(set("".join(flags)) - {"U"}))
    fixed = f"(?a{kept})" + body
    re.compile(fixed)  # still invalid: let it raise, the schema needs a look
    return fixed


def _convert(node, *, top=False):
    if not isinstance(node, dict):
        return node
    node = dict(node)
    node.pop("x-kubernetes-validations", None)  # CEL: not evaluated offline
    if "pattern" in node:
        node["pattern"] = _python_pattern(node["pattern"])
    if node.get("x-kubernetes-int-or-string"):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(exclusive) is True and bound in node:  # OpenAPI 3.0 boolean form -> draft 7 number
            node[exclusive] = node.pop(bound)
        elif node.get(exclusive) is False:
            node.pop(exclusive)
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"]
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            node[key] = [_convert(sub) for sub in node[key]]
    if "not" in node:
        node["not"] = _convert(node["not"])
    if "items" in node:
        node["items"] = _convert(node["items"])
    is_object = node.get("type") == "object" or "properties" in node
    if is_object:
        properties = {name: _convert(sub) for name, sub in (node.get("properties") or {}).items()}
        if top:
            properties["metadata"] = OBJECT_META
        if node.get("x-kubernetes-embedded-resource"):
            properties.setdefault("apiVersion", {"type": "string"})
            properties.setdefault("kind", {"type": "string"})
            properties["metadata"] = EMBEDDED_META
        if properties or "properties" in node:
            node["properties"] = properties
        if isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = _convert(node["additionalProperties"])
        elif "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
    return node


def to_jsonschema(crd_schema):
    """The JSON Schema that checks an object the way the API server would (see module doc)."""
    return _convert(copy.deepcopy(crd_schema), top=True)


# --- keywords and formats the API server checks -----------------------------------------------


def _list_type(validator, list_type, instance, schema):
    if list_type != "set" or not validator.is_type(instance, "array"):
        return
    seen: list[tuple[int, object]] = []
    for i, item in enumerate(instance):
        for j, other in seen:
            if item == other and type(item) is type(other):
                yield ValidationError(f"duplicate set entries [{j}] and [{i}]: {item!r} (x-kubernetes-list-type: set)")
        seen.append((i, item))


def _list_map_keys(validator, keys, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    item_props = (schema.get("items") or {}).get("properties") or {}
    defaults = {k: (item_props.get(k) or {}).get("default") for k in keys}
    seen: dict[tuple[str, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = tuple(json.dumps(item.get(k, defaults[k]), sort_keys=True) for k in keys)
        if key in seen:
            shown = ", ".join(f"{k}={item.get(k, defaults[k])!r}" for k in keys)
            yield ValidationError(
                f"duplicate entries [{seen[key]}] and [{i}] with the same {shown} "
                f"(x-kubernetes-list-type: map keyed by {list(keys)})"
            )
        else:
            seen[key] = i


FORMATS = FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value):
    return not isinstance(value, int) or isinstance(value, bool) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value):
    return not isinstance(value, int) or isinstance(value, bool) or -(2**63) <= value < 2**63


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


@FORMATS.checks("date-time")
def _date_time(value):
    return not isinstance(value, str) or bool(_RFC3339.match(value))


@FORMATS.checks("byte")
def _byte(value):
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


KubernetesValidator = extend(
    Draft7Validator,
    {
        "x-kubernetes-list-type": _list_type,
        "x-kubernetes-list-map-keys": _list_map_keys,
    },
)


@functools.cache
def _validator_for(path):
    with open(path, encoding="utf-8") as f:
        crd_schema = json.load(f)
    return validator_for_schema(crd_schema)


def validator_for_schema(crd_schema):
    return KubernetesValidator(to_jsonschema(crd_schema), format_checker=FORMATS)


# --- validation -------------------------------------------------------------------------------


def _path(error):
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _messages(error):
    path = _path(error)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties") or {})
        extras = sorted(k for k in error.instance if k not in known) if isinstance(error.instance, dict) else []
        where = f"{path}." if path != "<root>" else ""
        return [
            f"{where}{extra}: unknown field (not in the schema; the API server would prune it)" for extra in extras
        ] or [f"{path}: {error.message}"]
    if error.validator in ("anyOf", "oneOf") and error.context:
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        return [f"{path}: {error.message}; e.g. {deepest.message}"]
    return [f"{path}: {error.message}"]


def errors_for_schema(validator, doc):
    """Sorted messages "<path>: <what is wrong>" (empty: the document is valid)."""
    out = []
    for error in validator.iter_errors(doc):
        out.extend(_messages(error))
    return sorted(set(out))


def validate(doc):
    """Messages for one custom resource against its vendored schema (FileNotFoundError if none)."""
    path = schema_file(doc)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return errors_for_schema(_validator_for(path), doc)


def check_documents(documents):
    """(missing, invalid): custom resources with no vendored schema, and {resource: messages}."""
    missing, invalid = [], {}
    for doc in documents:
        if is_builtin(doc):
            continue
        if not os.path.exists(schema_file(doc)):
            missing.append(f"{describe(doc)}: no schema at {os.path.relpath(schema_file(doc), ROOT)}")
            continue
        messages = validate(doc)
        if messages:
            invalid[describe(doc)] = messages
    return missing, invalid
