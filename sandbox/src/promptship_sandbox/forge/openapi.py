"""Requests to the forge checked against GitHub's REST description (``@octokit/openapi``), strictly.

Each forge route is matched to the description's path by its shape (``/repos/{}/{}/pulls/{}``), so a path
parameter holding a slash (``git/ref/heads/main``) is matched the way GitHub does. For that operation:

- path parameters: the description's type (``issue_number`` an integer …) and enums;
- query parameters: only those the operation declares, each of its type (integers, booleans, enums, arrays);
  required ones present;
- the JSON body: present when required, absent when the operation takes none, valid against the schema with
  unknown properties refused (``additionalProperties: false`` wherever the description does not say).

A request that breaks it is answered like GitHub answers a body it cannot accept: 422, ``Invalid request.``
and the validation messages. Routes the description lacks are listed in ``UNDESCRIBED`` with the reason; a
forge route that is in neither raises at start-up, so no route goes unchecked silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# Forge routes (method, shape) that GitHub serves but its description does not have, and why.
UNDESCRIBED: dict[tuple[str, str], str] = {
    ("GET", "/repos/{}/{}/statuses/{}"): (
        "legacy path of a commit's statuses that PyGithub's Commit.get_statuses() reads; the description has "
        "only /commits/{ref}/statuses (and POST on this path)"
    ),
    ("GET", "/repos/{}/{}/git/refs/{}"): (
        "plural alias of /git/ref/{ref} that GitHub still answers (older PyGithub releases use it); the "
        "description lists /git/refs/{ref} only for PATCH and DELETE"
    ),
}
# Not REST at all, so never in the description: answered by the forge outside /api/v3.
NOT_REST = {
    "git smart HTTP (/{owner}/{repo}.git/info/refs, git-upload-pack, git-receive-pack)": (
        "git's wire protocol, served by git http-backend; not part of the REST description"
    ),
    "/api/_forge/logs/...": (
        "forge-private: stands in for the signed blob-storage URL that GET /actions/jobs/{id}/logs redirects to"
    ),
}

_PARAM = re.compile(r"\(\?P<\w+>[^)]*\)")


def shape_of_route(pattern: str, prefix: str = "/api/v3") -> str:
    """``/api/v3/repos/(?P<owner>[^/]+)/…`` → ``/repos/{}/…``."""
    return _PARAM.sub("{}", pattern)[len(prefix) :]


def shape_of_path(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", template)


@dataclass(frozen=True)
class RequestProblem:
    """Why a request breaks the description (``where`` names the parameter or the body's JSON path)."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class OpenAPIRequests:
    """The request side of GitHub's description, indexed by forge route shape."""

    def __init__(self, spec: dict[str, Any]):
        from jsonschema import Draft4Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        from promptship_sandbox.specs import json_schema_of

        self._spec = spec
        strict = _forbid_unknown_properties(json_schema_of({"components": spec.get("components", {})}))
        self._root = "urn:github-openapi"
        self._registry: Any = Registry().with_resource(
            self._root, Resource.from_contents(strict, default_specification=DRAFT4)
        )
        self._validator_cls = Draft4Validator
        self._strict_components = strict
        self._by_shape: dict[str, str] = {}
        for template in spec.get("paths", {}):
            self._by_shape.setdefault(shape_of_path(template), template)

    def template(self, method: str, shape: str) -> str | None:
        """The description's path template of a forge route, or None when it lacks (method, path)."""
        template = self._by_shape.get(shape)
        if template is None or method.lower() not in self._spec["paths"][template]:
            return None
        return template

    def _resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._lookup(node["$ref"], raw=True)
        return node

    def _lookup(self, ref: str, *, raw: bool) -> Any:
        node: Any = self._spec if raw else self._strict_components
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _errors(self, schema: Any, value: Any, where: str) -> list[RequestProblem]:
        from promptship_sandbox.specs import json_schema_of

        converted = _forbid_unknown_properties(json_schema_of(schema))
        converted = _rebase_refs(converted, self._root)
        validator = self._validator_cls(converted, registry=self._registry)
        problems = []
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(RequestProblem(f"{where}/{path}" if path else where, _short(error.message)))
        return problems

    def check(
        self,
        method: str,
        template: str,
        path_values: list[str],
        query: dict[str, list[str]],
        body: bytes,
    ) -> list[RequestProblem]:
        """Everything in the request that breaks the operation ``method template``; [] when it is valid."""
        path_item = self._spec["paths"][template]
        operation = path_item[method.lower()]
        params = [self._resolve(p) for p in [*path_item.get("parameters", []), *operation.get("parameters", [])]]
        problems: list[RequestProblem] = []
        names = re.findall(r"\{([^}]+)\}", template)
        by_name = {(p["in"], p["name"]): p for p in params}
        for name, raw in zip(names, path_values, strict=False):
            param = by_name.get(("path", name))
            if param is not None:
                problems += self._parameter(param, [raw], f"path parameter {name}")
        declared = {p["name"] for p in params if p["in"] == "query"}
        for name in sorted(set(query) - declared):
            problems.append(RequestProblem(f"query parameter {name}", "not a parameter of this operation"))
        for param in params:
            if param["in"] != "query":
                continue
            if param["name"] in query:
                problems += self._parameter(param, query[param["name"]], f"query parameter {param['name']}")
            elif param.get("required"):
                problems.append(RequestProblem(f"query parameter {param['name']}", "is required"))
        request_body = self._resolve(operation.get("requestBody"))
        if not body:
            if request_body and request_body.get("required"):
                problems.append(RequestProblem("body", "a JSON body is required"))
            return problems
        if not request_body:
            problems.append(RequestProblem("body", f"{method} {template} takes no body"))
            return problems
        try:
            data = json.loads(body)
        except ValueError:
            return [*problems, RequestProblem("body", "is not JSON")]
        schema = (request_body.get("content", {}).get("application/json") or {}).get("schema")
        if schema is None:
            problems.append(RequestProblem("body", "the operation takes no JSON body"))
        else:
            problems += self._errors(schema, data, "body")
        return problems

    def _parameter(self, param: dict[str, Any], raw: list[str], where: str) -> list[RequestProblem]:
        schema = self._resolve(param.get("schema") or {})
        kind = schema.get("type")
        if kind == "array":
            values: Any = [v for item in raw for v in item.split(",")] if not param.get("explode", True) else raw
            item_type = self._resolve(schema.get("items") or {}).get("type")
            coerced = [_coerce(v, item_type) for v in values]
            if any(c is _INVALID for c in coerced):
                return [RequestProblem(where, f"{raw!r} is not an array of {item_type}")]
            return self._errors(schema, coerced, where)
        if len(raw) > 1:
            return [RequestProblem(where, "given more than once")]
        value = _coerce(raw[0], kind)
        if value is _INVALID:
            return [RequestProblem(where, f"{raw[0]!r} is not of type {kind}")]
        return self._errors(schema, value, where)


_INVALID = object()


def _coerce(value: str, kind: Any) -> Any:
    if kind == "integer":
        return int(value) if re.fullmatch(r"-?\d+", value) else _INVALID
    if kind == "number":
        try:
            return float(value)
        except ValueError:
            return _INVALID
    if kind == "boolean":
        return {"true": True, "false": False}.get(value, _INVALID)
    return value


def _short(message: str) -> str:
    return message if len(message) <= 300 else message[:297] + "..."


def _rebase_refs(node: Any, root: str) -> Any:
    """``#/components/…`` → ``urn:github-openapi#/components/…`` (the registered, strict components)."""
    if isinstance(node, list):
        return [_rebase_refs(n, root) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rebase_refs(v, root) for k, v in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        out["$ref"] = root + ref
    return out


def _forbid_unknown_properties(node: Any, *, in_composition: bool = False) -> Any:
    """Objects with ``properties`` and no word on others get ``additionalProperties: false`` — except the
    members of an ``allOf`` (each would forbid the others' properties)."""
    if isinstance(node, list):
        return [_forbid_unknown_properties(n, in_composition=in_composition) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "allOf":
            out[key] = [_forbid_unknown_properties(v, in_composition=True) for v in value]
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {k: _forbid_unknown_properties(v) for k, v in value.items()}
        else:
            out[key] = _forbid_unknown_properties(value)
    if "properties" in out and "additionalProperties" not in out and not in_composition:
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=2)
def load_request_checker(path: Path) -> OpenAPIRequests:
    """The checker of the description at ``path`` (parsed once per process)."""
    return OpenAPIRequests(json.loads(path.read_text(encoding="utf-8")))


def invalid_request_message(problems: list[RequestProblem]) -> str:
    """GitHub's wording for a request its schema refuses: ``Invalid request.`` and one line per problem."""
    return "Invalid request.\n\n" + "\n".join(str(p) for p in problems)
