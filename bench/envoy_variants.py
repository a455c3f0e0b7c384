"""Envoy configurations for the benchmark variants, derived from the production config.

Every variant starts from `envoy/render.py`'s `build_config` for the `local` target (the same
listener, path normalisation, header stripping, access log, routes, clusters and timeouts the
gateway ships with) and changes only the authorization filters, so the variants differ in exactly
what is being measured:

  A  `floor`     ext_authz removed: Envoy straight to the model server, no authorization.
  B/C `ext-authz` the production config unchanged (ext_authz to authz; B and C differ only in
                 authz's rate-limit store, which is authz configuration, not Envoy's).
  D  `jwt-rbac`  ext_authz replaced by Envoy's own filters, configured for the demo policy of
                 config/authz.toml as far as they can express it:
                 - `jwt_authn`: the dev issuer's JWKS from a local file, `iss`/`aud`/`exp` checks,
                   the token removed before the model server, `sub` copied to x-authz-principal;
                 - `rbac`: one ALLOW policy per demo model (its allowed roles, read from the
                   token's `roles` claim; an `x-access-reason` header required for inference on
                   models with `requires_reason`); unknown models match no policy (403);
                 - `local_ratelimit`: a token bucket per (principal, model) for the demo's
                   principals, with the demo's per-model limits and role overrides.
                 What D cannot express (docs/benchmarks.md lists it): API keys and mTLS identities,
                 per-model decisions for OIP gRPC (the model name is inside the message), limits
                 shared between Envoy replicas or for principals not listed in config, the
                 `restricted`-model rule (it is about API keys), Cedar policies, and any audit.

Only the Python standard library is used (like render.py).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_render():
    spec = importlib.util.spec_from_file_location("envoy_render", ROOT / "envoy" / "render.py")
    if spec is None or spec.loader is None:
        raise ImportError("cannot load envoy/render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["envoy_render"] = module
    spec.loader.exec_module(module)
    return module


render = _load_render()

VARIANT_KINDS = ("floor", "ext-authz", "jwt-rbac")

JWT_AUTHN = "envoy.filters.http.jwt_authn"
RBAC = "envoy.filters.http.rbac"
LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
# Where jwt_authn leaves the verified payload for rbac (dynamic metadata under jwt_authn's name).
JWT_PAYLOAD_KEY = "jwt_payload"

# The demo policy of config/authz.toml, as D has to restate it (Envoy cannot read that file).
# Limits as `rate_limit = { rate, period }` there: `rate` requests per `period_s` seconds, burst =
# rate (authz's default); `roles` overrides the limit for principals holding that role.
DEMO_ISSUER = "https://issuer.authz.dev"
DEMO_AUDIENCE = "inference-gateway"
DEMO_MODELS = {
    "mission-summarizer": {"roles": ["analyst", "mission-user", "platform-admin"],
                           "requires_reason": True, "limit": (30, 60), "role_limits": {}},
    "threat-triage": {"roles": ["security-engineer", "platform-admin"],
                      "requires_reason": True, "limit": (20, 60), "role_limits": {}},
    "benchmark-echo": {"roles": ["analyst", "security-engineer", "platform-admin", "load-tester"],
                       "requires_reason": False, "limit": (120, 60), "role_limits": {"load-tester": (100_000, 1)}},
}
# The demo's principals and their roles ([[principals]] in config/authz.toml). local_ratelimit
# needs every (principal, model) bucket spelled out in advance.
DEMO_PRINCIPALS = {
    "analyst-1": ["analyst", "mission-user"],
    "security-1": ["security-engineer", "mission-user"],
    "admin-1": ["platform-admin", "security-engineer"],
    "load-tester": ["load-tester"],
}
# Requests not matching any (principal, model) bucket (public paths, unknown principals) share
# one bucket per Envoy worker: a coarse flood guard, far above anything the benchmark sends.
DEFAULT_BUCKET_PER_SECOND = 100_000


def _without_ext_authz(config: dict) -> dict:
    """Removes the ext_authz filter, its per-route settings and the authz cluster."""
    config = copy.deepcopy(config)
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                if "http_filters" not in hcm:
                    continue
                hcm["http_filters"] = [h for h in hcm["http_filters"] if h["name"] != render.EXT_AUTHZ]
                for vhost in hcm["route_config"]["virtual_hosts"]:
                    for route in vhost["routes"]:
                        per = route.get("typed_per_filter_config", {})
                        per.pop(render.EXT_AUTHZ, None)
                        if not per:
                            route.pop("typed_per_filter_config", None)
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if c["name"] != "authz"]
    return config


def _model_path_regex(model: str, suffix: str) -> str:
    return rf"/v2/models/{model}(/versions/[^/]+)?{suffix}"


def _roles_principal(roles: list[str]) -> dict:
    """Matches a verified token whose `roles` claim contains any of `roles`."""
    return {"or_ids": {"ids": [{"metadata": {
        "filter": JWT_AUTHN,
        "path": [{"key": JWT_PAYLOAD_KEY}, {"key": "roles"}],
        "value": {"list_match": {"one_of": {"string_match": {"exact": role}}}},
    }} for role in roles]}}


def _rbac_policies() -> dict:
    def path(regex: str) -> dict:
        return {"url_path": {"path": {"safe_regex": {"regex": regex}}}}

    policies = {}
    for model, spec in DEMO_MODELS.items():
        metadata = path(_model_path_regex(model, r"(/(ready|config))?"))
        infer = path(_model_path_regex(model, "/infer"))
        if spec["requires_reason"]:
            # A non-blank x-access-reason, as the Cedar forbid `reason-required-for-inference`.
            infer = {"and_rules": {"rules": [infer, {"header": {
                "name": render.CONTRACT["headers"]["access_reason"],
                "string_match": {"safe_regex": {"regex": r".*\S.*"}}}}]}}
        policies[f"model:{model}"] = {
            "permissions": [{"or_rules": {"rules": [metadata, infer]}}],
            "principals": [_roles_principal(spec["roles"])],
        }
    return policies


def _bucket(rate: int, period_s: int) -> dict:
    """A token bucket close to GCRA(rate per period, burst = rate): full at `rate` tokens, refilled
    smoothly (every second, or one token at a time when the rate is slower than that)."""
    per_second = rate / period_s
    if per_second >= 1:
        return {"max_tokens": rate, "tokens_per_fill": int(per_second), "fill_interval": "1s"}
    return {"max_tokens": rate, "tokens_per_fill": 1, "fill_interval": f"{round(period_s / rate)}s"}


def _rate_limit_descriptors() -> list[dict]:
    out = []
    for principal, roles in DEMO_PRINCIPALS.items():
        for model, spec in DEMO_MODELS.items():
            if not set(roles) & set(spec["roles"]):
                continue
            overrides = [spec["role_limits"][r] for r in roles if r in spec["role_limits"]]
            rate, period_s = max(overrides, key=lambda lim: lim[0] / lim[1]) if overrides else spec["limit"]
            out.append({
                "entries": [{"key": "principal", "value": principal},
                            {"key": "path", "value": f"/v2/models/{model}/infer"}],
                "token_bucket": _bucket(rate, period_s),
            })
    return out


def _jwt_rbac_filters(jwks_path: str) -> list[dict]:
    public_grpc = [f"/{render.GRPC_SERVICE}/{m}" for m in render.PUBLIC_GRPC_METHODS]
    jwt_rules = [{"match": {"path": p}} for p in public_grpc]  # no `requires`: no token needed
    jwt_rules += [
        {"match": {"prefix": "/v2/models/"}, "requires": {"provider_name": "dev"}},
        {"match": {"prefix": f"/{render.GRPC_SERVICE}/"}, "requires": {"provider_name": "dev"}},
    ]
    return [
        {
            "name": JWT_AUTHN,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"dev": {
                    "issuer": DEMO_ISSUER,
                    "audiences": [DEMO_AUDIENCE],
                    "local_jwks": {"filename": jwks_path},
                    # As authz: the credential never reaches the model server.
                    "forward": False,
                    "payload_in_metadata": JWT_PAYLOAD_KEY,
                    "claim_to_headers": [{"header_name": render.PRINCIPAL_HEADER, "claim_name": "sub"}],
                    "clock_skew_seconds": 30,
                    # Verified tokens are cached, as authz caches them (token_cache_entries).
                    "jwt_cache_config": {"jwt_cache_size": 10000},
                }},
                "rules": jwt_rules,
            },
        },
        {
            "name": RBAC,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                "rules": {"action": "ALLOW", "policies": _rbac_policies()},
            },
        },
        {
            "name": LOCAL_RATELIMIT,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "gateway_local_ratelimit",
                "token_bucket": {"max_tokens": DEFAULT_BUCKET_PER_SECOND, "tokens_per_fill": DEFAULT_BUCKET_PER_SECOND,
                                 "fill_interval": "1s"},
                "filter_enabled": {"runtime_key": "local_ratelimit_enabled",
                                   "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                "filter_enforced": {"runtime_key": "local_ratelimit_enforced",
                                    "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
                # A request with its own bucket does not also draw from the shared default one.
                "always_consume_default_token_bucket": False,
                "rate_limits": [{"actions": [
                    {"request_headers": {"header_name": render.PRINCIPAL_HEADER, "descriptor_key": "principal"}},
                    {"request_headers": {"header_name": ":path", "descriptor_key": "path"}},
                ]}],
                "descriptors": _rate_limit_descriptors(),
                "response_headers_to_add": [{"append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                                             "header": {"key": "x-local-rate-limit", "value": "true"}}],
            },
        },
    ]


def build_variant(kind: str, values: dict, jwks_path: str | None = None) -> dict:
    """The Envoy bootstrap for one variant kind (`floor`, `ext-authz`, `jwt-rbac`)."""
    base = render.build_config(values)
    if kind == "ext-authz":
        return base
    config = _without_ext_authz(base)
    if kind == "floor":
        return config
    if kind != "jwt-rbac":
        raise ValueError(f"unknown variant kind {kind!r} (expected one of {', '.join(VARIANT_KINDS)})")
    if not jwks_path:
        raise ValueError("the jwt-rbac variant needs the dev issuer's JWKS file")
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                if hcm.get("stat_prefix") != "ingress":
                    continue
                router = hcm["http_filters"].pop()  # the router stays last
                hcm["http_filters"] += _jwt_rbac_filters(jwks_path) + [router]
                # Routes that were public or fixed in the ext_authz config (ext_authz disabled
                # there) skip rbac too; jwt_authn's rules already leave them without a token.
                ext_routes = render.routes()
                for route, original in zip(hcm["route_config"]["virtual_hosts"][0]["routes"], ext_routes):
                    per_route = original.get("typed_per_filter_config", {}).get(render.EXT_AUTHZ, {})
                    if per_route.get("disabled"):
                        route.setdefault("typed_per_filter_config", {})[RBAC] = {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"}
    return config


def render_variant(kind: str, values: dict, jwks_path: str | None = None) -> str:
    """The YAML text of `build_variant`."""
    header = [f"# GENERATED by bench/envoy_variants.py: benchmark variant {kind!r} (not for production)."]
    return "\n".join(header + render.emit(build_variant(kind, values, jwks_path))) + "\n"


def local_values(**overrides) -> dict:
    """The `local` target's values with this run's addresses."""
    values = render.load_values("local")
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values
