"""Vendor the openAPIV3Schema of CustomResourceDefinitions as JSON, for the offline checks in
tests/deploy/test_custom_resources.py.

    python k8s/schemas/vendor_crd.py CRD.yaml [CRD.yaml ...]          # write k8s/schemas/<group>/<kind>_<version>.json
    python k8s/schemas/vendor_crd.py --check CRD.yaml [CRD.yaml ...]  # compare with the vendored copy; exit 1 on a diff
    python k8s/schemas/vendor_crd.py --check --sources --mirrors DIR  # every SOURCES.md row, from git copies

A CRD file may hold several documents (a release manifest such as cnpg-1.30.0.yaml works as is);
documents that are not CustomResourceDefinitions are skipped. Each served version's
openAPIV3Schema is written with its `description` keywords removed (they carry no validation;
a property that happens to be *named* "description" is kept), keys sorted, one space indent, so
the same upstream file always gives the same bytes: `--check` against the upstream file named in
SOURCES.md, at the release recorded there, tells whether the vendored copy is faithful. Record the
printed sha256 in SOURCES.md.

`--sources` takes the upstream files from git copies of the projects' repositories instead of
paths: for every row of SOURCES.md it checks that the recorded tag points to the recorded commit,
reads the recorded path at that tag (`git show <tag>:<path>`), and writes or checks the file the
row names and its sha256. DIR holds one git directory per project, found as DIR/<owner>+<name>/repo,
DIR/<owner>/<name>, DIR/<owner>/<name>.git, DIR/<name> or DIR/<name>.git (a bare or normal clone
with tags: `git clone --bare https://github.com/<owner>/<name> DIR/<owner>/<name>.git`).
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))

_SUBSCHEMA_MAPS = ("properties", "patternProperties", "definitions", "dependencies")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMA_ONE = ("not", "additionalProperties", "additionalItems", "items")


def strip_descriptions(schema):
    """A copy of the schema without its `description` keywords (only where they are keywords)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, object] = {}
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


# --- SOURCES.md --------------------------------------------------------------------------------

SOURCES = os.path.join(HERE, "SOURCES.md")
# | `group/kind_version.json` | Kind group/version | owner/name | vTAG | `path` at the tag | commit | sha256 |
_ROW = re.compile(
    r"^\|\s*`(?P<file>[\w.-]+/[\w.-]+\.json)`\s*\|(?P<kind>[^|]*)\|\s*(?P<project>[\w.-]+/[\w.-]+)\s*\|"
    r"\s*(?P<release>v?[0-9][\w.+-]*)\s*\|\s*`(?P<path>[^`]+)`[^|]*\|\s*(?P<commit>[0-9a-f]{40})\s*\|"
    r"\s*(?P<sha256>[0-9a-f]{64})\s*\|\s*$"
)


def read_sources(path=SOURCES):
    """The rows of SOURCES.md's file table, as dicts: file, kind, project, release, path, commit, sha256."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _ROW.match(line.strip())
            if m:
                rows.append({k: v.strip() for k, v in m.groupdict().items()})
    return rows


def find_git_dir(mirrors, project):
    owner, name = project.split("/")
    for candidate in (
        os.path.join(mirrors, f"{owner}+{name}", "repo"),
        os.path.join(mirrors, owner, name),
        os.path.join(mirrors, owner, f"{name}.git"),
        os.path.join(mirrors, name),
        os.path.join(mirrors, f"{name}.git"),
    ):
        if os.path.isdir(candidate):
            return candidate
    return None


def _git(git_dir, *args):
    return subprocess.run(["git", "-C", git_dir, *args], check=True, capture_output=True).stdout


def upstream_file(git_dir, tag, path, commit):
    """The bytes of `path` at `tag`, after checking that the tag points to `commit`."""
    found = _git(git_dir, "rev-parse", "--verify", f"{tag}^{{commit}}").decode().strip()
    if found != commit:
        raise ValueError(f"tag {tag} points to {found}, SOURCES.md records {commit}")
    return _git(git_dir, "show", f"{tag}:{path}")


def _from_sources(mirrors, check):
    status = 0
    rows = read_sources()
    if not rows:
        print(f"{SOURCES}: no file rows", file=sys.stderr)
        return 1
    for row in rows:
        where = f"{row['project']}@{row['release']}:{row['path']}"
        git_dir = find_git_dir(mirrors, row["project"])
        if git_dir is None:
            print(f"MISSING  {row['file']}: no git copy of {row['project']} under {mirrors}")
            status = 1
            continue
        try:
            data = upstream_file(git_dir, row["release"], row["path"], row["commit"])
        except (subprocess.CalledProcessError, ValueError) as e:
            detail = e.stderr.decode().strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
            print(f"DIFFERENT  {row['file']}: {where}: {detail}")
            status = 1
            continue
        with tempfile.NamedTemporaryFile(suffix=".yaml") as tmp:
            tmp.write(data)
            tmp.flush()
            found = dict(schemas_of(tmp.name))
        if row["file"] not in found:
            print(f"DIFFERENT  {row['file']}: {where} has no such CRD version (it has {sorted(found)})")
            status = 1
            continue
        rendered = found[row["file"]]
        digest = hashlib.sha256(rendered).hexdigest()
        target = os.path.join(HERE, row["file"])
        if check:
            try:
                with open(target, "rb") as f:
                    same = f.read() == rendered
            except FileNotFoundError:
                same = False
            recorded = digest == row["sha256"]
            ok = same and recorded
            note = "" if recorded else f" (SOURCES.md records sha256 {row['sha256']})"
            print(f"{'same' if ok else 'DIFFERENT'}  {row['file']}  from {where}  sha256 {digest}{note}")
            status |= 0 if ok else 1
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(rendered)
            print(f"{row['file']}  from {where}  sha256 {digest}")
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the vendored files instead of writing")
    parser.add_argument("--sources", action="store_true", help="the upstream files of SOURCES.md's rows, from git")
    parser.add_argument("--mirrors", default=os.environ.get("UPSTREAM_MIRRORS", ""), help="where the git copies are")
    parser.add_argument("crds", nargs="*")
    args = parser.parse_args(argv)
    if args.sources:
        if args.crds or not args.mirrors:
            parser.error("--sources takes --mirrors DIR (or $UPSTREAM_MIRRORS) and no CRD file")
        return _from_sources(args.mirrors, args.check)
    if not args.crds:
        parser.error("name at least one CRD file (or use --sources)")
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
