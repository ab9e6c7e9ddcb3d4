"""Custom resources checked against their CRD's openAPIV3Schema the way the API server does it:
defaults applied, unknown fields pruned (structural schemas), then validated (jsonschema).

Not done: CEL rules (x-kubernetes-validations) are skipped, as are formats (int32, date-time) and
the metadata schema beyond name rules.
"""

from __future__ import annotations

import copy

import jsonschema


def to_json_schema(s):
    """Kubernetes OpenAPI v3 schema -> plain JSON schema."""
    if isinstance(s, list):
        return [to_json_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k, v in s.items():
        if k in ("x-kubernetes-validations", "format", "nullable", "x-kubernetes-int-or-string",
                 "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type",
                 "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
                 "x-kubernetes-embedded-resource", "default"):
            continue
        if k in ("properties", "patternProperties"):
            out[k] = {name: to_json_schema(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not"):
            out[k] = to_json_schema(v) if isinstance(v, dict) else v
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = to_json_schema(v)
        else:
            out[k] = v
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    return out


def prune_and_default(value, schema: dict | None):
    """Drops fields the schema does not know (unless it preserves unknown fields), fills in
    defaults; returns the new value."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema
                                    or "additionalProperties" in schema):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        out = {}
        for k, v in value.items():
            if props and k in props:
                out[k] = prune_and_default(v, props[k])
            elif isinstance(extra, dict):
                out[k] = prune_and_default(v, extra)
            elif preserve or extra is True or (props is None and extra is None):
                out[k] = v
        for k, sub in (props or {}).items():
            if k not in out and isinstance(sub, dict) and "default" in sub:
                out[k] = prune_and_default(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune_and_default(v, schema["items"]) for v in value]
    return value


class SchemaError(ValueError):
    pass


def check_custom_resource(obj: dict, openapi_schema: dict | None) -> dict:
    """Returns the pruned and defaulted object; raises SchemaError listing the violations."""
    if not openapi_schema:
        return obj
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    props = {k: v for k, v in (openapi_schema.get("properties") or {}).items()
             if k not in ("apiVersion", "kind", "metadata")}
    root = dict(openapi_schema, properties=props)
    body = prune_and_default(body, root)
    validator = jsonschema.Draft7Validator(to_json_schema(root))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        msgs = []
        for e in errors[:10]:
            where = ".".join(str(p) for p in e.absolute_path) or "<root>"
            msgs.append(f"{where}: {e.message}")
        raise SchemaError("; ".join(msgs))
    out = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    out.update(body)
    return out
