#!/usr/bin/env python3
"""Writes kubeconform's JSON schemas from a live kube-apiserver's OpenAPI v3 document.

kubeconform normally downloads schemas from GitHub; this machine has no such access, and the schemas
of the exact API server the tests run (and of the CRDs installed in it) are the most faithful ones
anyway. For every kind the server publishes (x-kubernetes-group-version-kind), one standalone file
`<kind>-<group's first label>-<version>.json` (kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}`
naming) holding the kind's schema plus the schemas it references, made strict: objects refuse
fields the API does not define, as the API server's own strict field validation does.

Usage: kube-jsonschemas.py OUT_DIR [KUBECTL ...]   (kubectl and its flags; default: kubectl)
"""

import json
import os
import subprocess
import sys

REF_PREFIX = "#/components/schemas/"


def get_raw(kubectl, path):
    out = subprocess.run(kubectl + ["get", "--raw", path], check=True, capture_output=True)
    return json.loads(out.stdout)


def refs_in(node, found):
    """Collects the component names referenced anywhere below node."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX):])
        for v in node.values():
            refs_in(v, found)
    elif isinstance(node, list):
        for v in node:
            refs_in(v, found)


def closure(schemas, root):
    """The names of root and every component it reaches through $ref."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        found = set()
        refs_in(schemas[name], found)
        todo.extend(found - seen)
    return seen


def strict(schema):
    """A copy of one schema node made strict: objects with a fixed set of properties refuse others,
    and the OpenAPI-only constructs JSON Schema draft 4 does not know are rewritten. Walks schema
    positions only (a property *named* "properties" or "type" is a name, not a keyword)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(out.get(key), list):
            out[key] = [strict(v) for v in out[key]]
    if isinstance(out.get("not"), dict):
        out["not"] = strict(out["not"])
    if out.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and out.get("x-kubernetes-preserve-unknown-fields") is not True
    ):
        out["additionalProperties"] = False
    return out


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = sys.argv[1]
    kubectl = sys.argv[2:] or ["kubectl"]
    os.makedirs(out_dir, exist_ok=True)
    index = get_raw(kubectl, "/openapi/v3")
    written = 0
    for path, entry in sorted(index.get("paths", {}).items()):
        if not (path == "api/v1" or path.startswith("apis/")) or path.count("/") < 1:
            continue
        doc = get_raw(kubectl, "/" + entry["serverRelativeURL"].lstrip("/"))
        schemas = doc.get("components", {}).get("schemas", {})
        for name, schema in schemas.items():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                want_gv = "api/v1" if gvk["group"] == "" else f"apis/{gvk['group']}/{gvk['version']}"
                if want_gv != path:
                    continue  # e.g. DeleteOptions is listed under every group version
                group_label = gvk["group"].split(".")[0]
                suffix = f"-{group_label}-{gvk['version']}" if gvk["group"] else f"-{gvk['version']}"
                names = closure(schemas, name)
                standalone = strict(dict(schema))
                standalone["$schema"] = "http://json-schema.org/draft-04/schema#"
                standalone["components"] = {
                    "schemas": {n: strict(schemas[n]) for n in sorted(names) if n != name}
                }
                # The root's own self-references (recursive kinds) resolve to the document root.
                standalone["components"]["schemas"][name] = {"$ref": "#"}
                fname = os.path.join(out_dir, f"{gvk['kind'].lower()}{suffix}.json")
                with open(fname, "w") as f:
                    json.dump(standalone, f)
                written += 1
    print(f"wrote {written} schemas to {out_dir}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
