"""Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and the field bookkeeping behind
the approximated server-side apply (field paths per manager, rendered as managedFields)."""

from __future__ import annotations

import copy


class PatchError(ValueError):
    pass


def merge_patch(target, patch):
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc, parts: list[str]):
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"path element {p!r} not found") from None
        elif isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"path element {p!r} not found")
            cur = cur[p]
        else:
            raise PatchError(f"cannot descend into {type(cur).__name__} at {p!r}")
    return cur


def _get(doc, parts):
    if not parts:
        return doc
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        try:
            return parent[int(last)]
        except (ValueError, IndexError):
            raise PatchError(f"index {last!r} out of range") from None
    if not isinstance(parent, dict) or last not in parent:
        raise PatchError(f"path element {last!r} not found")
    return parent[last]


def _add(doc, parts, value):
    if not parts:
        return value
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError(f"bad list index {last!r}") from None
            if i < 0 or i > len(parent):
                raise PatchError(f"index {i} out of range")
            parent.insert(i, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError("cannot add into a scalar")
    return doc


def _remove(doc, parts):
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"index {last!r} out of range") from None
    if not isinstance(parent, dict) or last not in parent:
        raise PatchError(f"path element {last!r} not found")
    return parent.pop(last)


def json_patch(doc, ops):
    """RFC 6902 add/remove/replace/move/copy/test."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid operation {op!r}")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _get(doc, parts)
            if not parts:
                doc = copy.deepcopy(op.get("value"))
            else:
                _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                _remove(doc, src)
            doc = _add(doc, parts, value)
        elif kind == "test":
            try:
                current = _get(doc, parts)
            except PatchError:
                current = None  # as the API server: a missing field tests equal to null
            if current != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


# --- field paths (server-side apply bookkeeping) ----------------------------------------------

# Metadata fields a manager can own; the rest of metadata is the server's.
_OWNABLE_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


def leaf_paths(obj: dict, subresource: str = "") -> dict[tuple, object]:
    """Leaf field paths of an object (maps recurse, lists and scalars are leaves) with their
    values; only `status` for the status subresource, everything but status otherwise."""
    out: dict[tuple, object] = {}

    def walk(prefix, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(prefix + (k,), v)
        else:
            out[prefix] = value

    for key, value in (obj or {}).items():
        if key in ("apiVersion", "kind"):
            continue
        if subresource == "status":
            if key == "status":
                walk((key,), value)
            continue
        if key == "status":
            continue
        if key == "metadata":
            for mk in _OWNABLE_METADATA:
                if isinstance(value, dict) and mk in value:
                    walk(("metadata", mk), value[mk])
            continue
        walk((key,), value)
    return out


def related(a: tuple, b: tuple) -> bool:
    """One path is a prefix of the other (they name overlapping fields)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def get_path(obj, path: tuple):
    cur = obj
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return _MISSING
        cur = cur[p]
    return cur


_MISSING = object()


def delete_path(obj: dict, path: tuple):
    """Removes a field and then any maps left empty above it."""
    chain = [obj]
    cur = obj
    for p in path[:-1]:
        if not isinstance(cur, dict) or p not in cur:
            return
        cur = cur[p]
        chain.append(cur)
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    for i in range(len(path) - 1, 0, -1):
        parent, child = chain[i - 1], chain[i]
        if isinstance(child, dict) and not child:
            parent.pop(path[i - 1], None)
        else:
            break


def deep_merge(target: dict, applied: dict) -> dict:
    """The applied configuration over the live object: maps merge, lists and scalars replace,
    nulls are ignored."""
    out = copy.deepcopy(target)
    for k, v in applied.items():
        if v is None:
            continue
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def fields_v1(paths) -> dict:
    """Field paths in the managedFields FieldsV1 shape ({"f:spec": {"f:replicas": {}}})."""
    root: dict = {}
    for path in sorted(paths):
        cur = root
        for p in path:
            cur = cur.setdefault(f"f:{p}", {})
    return root
