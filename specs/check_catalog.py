#!/usr/bin/env python3
"""Lints the secbus event catalog in specs/events/.

Run: python3 specs/check_catalog.py   (needs: pip install 'jsonschema[format-nongpl]')

For every <type>.json it checks that the file is a valid draft 2020-12 schema that follows
the catalog conventions of specs/events/README.md (self-contained, a description on every
property, closed objects, $id carrying the type and version), that every example is valid
with format assertion on, that an unknown top-level property is refused, and that no example
carries a string the secret guard would refuse. It also checks that the README table lists
exactly the catalog's types with their summaries. Exit status 0 only when all is clean.
"""

import copy
import json
import pathlib
import re
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:
    sys.exit("check_catalog: needs the jsonschema package: pip install 'jsonschema[format-nongpl]'")

EVENTS = pathlib.Path(__file__).resolve().parent / "events"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TYPE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
ID_RE = re.compile(r"^https://secbus\.dev/schemas/events/(?P<type>[^/]+)/v(?P<v>[1-9][0-9]*)\.json$")
ROW_RE = re.compile(r"^\|\s*[^|]+\|\s*`(?P<type>[^`]+)`\s*\|\s*(?P<summary>.+?)\s*\|\s*$")
FORMATS = {"date-time", "ipv4", "ipv6", "uri", "hostname"}

# Credential shapes no example may contain: the secret guard would refuse the event.
SECRET_PATTERNS = [
    ("private key block", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("aws access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("gitlab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b")),
    ("slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    ("stripe key", re.compile(r"\b[sr]k_(live|test)_[A-Za-z0-9]{16,}\b")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")),
    ("url with password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
]
SECRET_NAME = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key", re.IGNORECASE)


def walk_properties(schema, pointer, visit):
    """Calls visit(pointer, schema) for every property schema under properties/items."""
    for name, sub in schema.get("properties", {}).items():
        here = f"{pointer}/properties/{name}"
        visit(here, name, sub)
        walk_properties(sub, here, visit)
    items = schema.get("items")
    if isinstance(items, dict):
        walk_properties(items, f"{pointer}/items", visit)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        walk_properties(extra, f"{pointer}/additionalProperties", visit)


def find_key(value, key, pointer=""):
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield pointer
            yield from find_key(v, key, f"{pointer}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from find_key(v, key, f"{pointer}/{i}")


def hash_pointers(schema):
    """Instance-side name paths of fields marked x-secbus-hash (array indices as *)."""
    marked = set()

    def rec(sub, path):
        if sub.get("x-secbus-hash") is True:
            marked.add(path)
        for name, child in sub.get("properties", {}).items():
            rec(child, path + (name,))
        if isinstance(sub.get("items"), dict):
            rec(sub["items"], path + ("*",))

    rec(schema, ())
    return marked


def secret_problems(value, marked, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            here = path + (k,)
            if isinstance(v, str) and v and SECRET_NAME.search(k) and here not in marked:
                yield f"field {'/'.join(here)} is named like a secret"
            yield from secret_problems(v, marked, here)
    elif isinstance(value, list):
        for v in value:
            yield from secret_problems(v, marked, path + ("*",))
    elif isinstance(value, str):
        for detector, pattern in SECRET_PATTERNS:
            if pattern.search(value):
                yield f"value at {'/'.join(path)} looks like a credential ({detector})"


def check_file(path, problems):
    stem = path.name[: -len(".json")]
    where = f"{path.name}:"
    try:
        schema = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        problems.append(f"{where} not JSON: {e}")
        return None, 0
    if not TYPE_RE.match(stem) or len(stem) > 255:
        problems.append(f"{where} file name is not an event type")
    try:
        Draft202012Validator.check_schema(schema)
    except Exception as e:  # noqa: BLE001 - report any metaschema failure the same way
        message = getattr(e, "message", str(e)).splitlines()[0]
        problems.append(f"{where} not a valid draft 2020-12 schema: {message}")
        return None, 0

    if schema.get("$schema") != DRAFT:
        problems.append(f"{where} $schema must be {DRAFT}")
    m = ID_RE.match(schema.get("$id", ""))
    if not m or m["type"] != stem:
        problems.append(f"{where} $id must be https://secbus.dev/schemas/events/{stem}/v<N>.json")
    if schema.get("x-secbus-type") != stem:
        problems.append(f"{where} x-secbus-type must be {stem}")
    for key in ("title", "description", "x-secbus-summary"):
        if not isinstance(schema.get(key), str) or not schema[key].strip():
            problems.append(f"{where} {key} is missing")
    if "\n" in schema.get("x-secbus-summary", ""):
        problems.append(f"{where} x-secbus-summary must be one line")
    if schema.get("type") != "object" or schema.get("additionalProperties") is not False:
        problems.append(f"{where} the data must be an object with additionalProperties false")
    missing = set(schema.get("required", [])) - set(schema.get("properties", {}))
    if missing:
        problems.append(f"{where} required names unknown properties {sorted(missing)}")
    for key in ("$ref", "$dynamicRef"):
        for pointer in find_key(schema, key):
            problems.append(f"{where} {key} at {pointer or '/'}: schemas must be self-contained")

    def visit(pointer, name, sub):
        if not isinstance(sub.get("description"), str) or not sub["description"].strip():
            problems.append(f"{where} {pointer} has no description")
        if "properties" in sub and "additionalProperties" not in sub:
            problems.append(f"{where} {pointer} must say additionalProperties")
        if "x-secbus-hash" in sub and (sub["x-secbus-hash"] is not True or sub.get("type") != "string"):
            problems.append(f"{where} {pointer}: x-secbus-hash is for string fields, set to true")

    walk_properties(schema, "", visit)

    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    examples = schema.get("examples", [])
    if not examples:
        problems.append(f"{where} has no examples")
    marked = hash_pointers(schema)
    for i, example in enumerate(examples):
        for error in validator.iter_errors(example):
            at = "/" + "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{where} examples[{i}] {at}: {error.message}")
        bigger = copy.deepcopy(example)
        bigger["not_in_the_schema"] = 1
        if validator.is_valid(bigger):
            problems.append(f"{where} examples[{i}] still valid with an unknown property")
        for problem in secret_problems(example, marked):
            problems.append(f"{where} examples[{i}]: {problem}")
    return schema, len(examples)


def main():
    missing = FORMATS - set(Draft202012Validator.FORMAT_CHECKER.checkers)
    if missing:
        sys.exit(f"check_catalog: format checkers missing for {sorted(missing)}: "
                 "pip install 'jsonschema[format-nongpl]'")
    problems = []
    types = set()
    summaries = {}
    total_examples = 0
    for path in sorted(EVENTS.glob("*.json")):
        schema, n = check_file(path, problems)
        total_examples += n
        types.add(path.name[: -len(".json")])
        if schema is not None:
            summaries[path.name[: -len(".json")]] = schema.get("x-secbus-summary")

    readme = (EVENTS / "README.md").read_text()
    if "\n## Event types\n" not in readme:
        problems.append("README.md: no '## Event types' section")
    table = readme.split("\n## Event types\n", 1)[-1].split("\n## ", 1)[0]
    rows = {m["type"]: m["summary"] for m in map(ROW_RE.match, table.splitlines()) if m}
    for t in sorted(types - set(rows)):
        problems.append(f"README.md: {t} is missing from the table")
    for t in sorted(set(rows) - types):
        problems.append(f"README.md: the table lists {t}, which has no schema")
    for t in sorted(set(rows) & set(summaries)):
        if rows[t] != summaries[t]:
            problems.append(f"README.md: the summary of {t} differs from its x-secbus-summary")

    for problem in problems:
        print(problem)
    status = "ok" if not problems else f"{len(problems)} problem(s)"
    print(f"check_catalog: {len(types)} types, {total_examples} examples: {status}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
