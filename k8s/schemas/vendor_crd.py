"""Vendor the openAPIV3Schema of CustomResourceDefinitions as JSON, for the offline checks in
tests/deploy/test_custom_resources.py.

    python k8s/schemas/vendor_crd.py CRD.yaml [CRD.yaml ...]          # write k8s/schemas/<group>/<kind>_<version>.json
    python k8s/schemas/vendor_crd.py --check CRD.yaml [CRD.yaml ...]  # compare with the vendored copy; exit 1 on a diff

A CRD file may hold several documents (a release manifest such as cnpg-1.25.1.yaml works as is);
documents that are not CustomResourceDefinitions are skipped. Each served version's
openAPIV3Schema is written with its `description` keywords removed (they carry no validation;
a property that happens to be *named* "description" is kept), keys sorted, one space indent, so
the same upstream file always gives the same bytes: `--check` against the upstream file named in
SOURCES.md, at the release recorded there, tells whether the vendored copy is faithful. Record the
printed sha256 in SOURCES.md.
"""
import argparse
import hashlib
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("not", "additionalProperties", "additionalItems", "items")


def strip_descriptions(schema):
    """A copy of the schema without its `description` keywords (only where they are keywords)."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strip_descriptions(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            out[key] = [strip_descriptions(sub) for sub in value]
        elif key in _SUBSCHEMA_ONE:
            if isinstance(value, list):
                out[key] = [strip_descriptions(sub) for sub in value]
            else:
                out[key] = strip_descriptions(value)
        else:
            out[key] = value
    return out


def render(schema):
    """The vendored bytes of one schema."""
    return (json.dumps(strip_descriptions(schema), indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def schemas_of(path):
    """[(relative output path, bytes)] for every version of every CRD in the file."""
    with open(path, encoding="utf-8") as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    out = []
    for doc in documents:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        group, kind = spec["group"], spec["names"]["kind"]
        for version in spec["versions"]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                continue
            out.append((os.path.join(group, f"{kind.lower()}_{version['name']}.json"), render(schema)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the vendored files instead of writing")
    parser.add_argument("crds", nargs="+")
    args = parser.parse_args(argv)
    status = 0
    for crd in args.crds:
        found = schemas_of(crd)
        if not found:
            print(f"{crd}: no CustomResourceDefinition with an openAPIV3Schema", file=sys.stderr)
            status = 1
        for rel, data in found:
            target = os.path.join(HERE, rel)
            digest = hashlib.sha256(data).hexdigest()
            if args.check:
                try:
                    with open(target, "rb") as f:
                        same = f.read() == data
                except FileNotFoundError:
                    same = False
                print(f"{'same' if same else 'DIFFERENT'}  {rel}  sha256 of {crd}'s: {digest}")
                status |= 0 if same else 1
            else:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as f:
                    f.write(data)
                print(f"{rel}  sha256 {digest}")
    return status


if __name__ == "__main__":
    sys.exit(main())
