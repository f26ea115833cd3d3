"""Render deploy/nats/nats-server.conf: one NATS user per shoal service role, least privilege.

    python deploy/nats/render_config.py > deploy/nats/nats-server.conf      # the committed sample
    python deploy/nats/render_config.py --namespace prod --listen 0.0.0.0:4222 > nats.conf

The sample reads each password from the environment (SHOAL_NATS_<ROLE>_PASSWORD, a nats-server
config variable); `render(passwords={...})` writes literal ones instead (the tests use random
ones). The subjects come from protocol/subjects.py (see docs/DEPLOY.md for what each role needs
and why). Roles: frontend, worker (aggregated decode, component "backend"), decode
(disaggregated decode: also a client of prefill), prefill, router, embedding, diffusion, and for
images encode, processor and vlm_worker (an LLM worker behind a processor: reads embeddings over NIXL),
and planner (reads stats, load and discovery; starts workers through its connector, not NATS).
Only `setup` (`python -m shared.cli setup`, run once before the services) may create, update,
purge or delete streams and buckets; the services use the ones it made.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("setup", "frontend", "worker", "decode", "prefill", "router", "embedding", "diffusion", "encode",
         "processor", "vlm_worker", "planner")

# Names from protocol/subjects.py (this file runs without the project on the path, e.g. in a
# container build step; tests/integration/test_nats_auth.py checks they agree).
PREFIX = "shoal"
INSTANCES_BUCKET = "shoal-instances"
MODELS_BUCKET = "shoal-models"
ARTIFACTS_STORE = "shoal-artifacts"
NIXL_BUCKET = "shoal-nixl"
SESSIONS_BUCKET = "shoal-sessions"  # session affinity shared by the routers (shared/routing/session_book.py)

# Replies to requests a worker received: any number of frames, for up to an hour per request.
RESPONSES = {"max": -1, "expires": "1h"}


def password_env(role: str) -> str:
    return f"SHOAL_NATS_{role.upper()}_PASSWORD"


def _stream_api(stream: str, *, consume: bool = True, get: bool = False) -> list[str]:
    """The $JS.API calls nats-py makes on one stream: info, ordered consumers, direct gets. Never
    STREAM.CREATE/UPDATE/PURGE/DELETE: only the setup role shapes streams and buckets."""
    api = "$JS.API"
    out = [f"{api}.STREAM.INFO.{stream}"]
    if consume:  # KV watch, object get, KV-event replay: ordered (ephemeral) consumers
        out += [f"{api}.CONSUMER.CREATE.{stream}", f"{api}.CONSUMER.CREATE.{stream}.>",
                f"{api}.CONSUMER.DELETE.{stream}.*", f"{api}.CONSUMER.INFO.{stream}.*"]
    if get:  # KV get, object info
        out += [f"{api}.DIRECT.GET.{stream}", f"{api}.DIRECT.GET.{stream}.>", f"{api}.STREAM.MSG.GET.{stream}"]
    return out


@dataclass
class Role:
    publish: list[str]
    subscribe: list[str]
    publish_deny: list[str] = field(default_factory=list)
    subscribe_deny: list[str] = field(default_factory=list)
    responses: bool = False  # may answer the reply inbox of a request it received
    comment: str = ""


def roles(namespace: str = "shoal", backend: str = "backend", prefill: str = "prefill",
          router: str = "router", embedding: str = "embedding", encode: str = "encode",
          processor: str = "processor", pd: str = "pd", vlm: str = "vlm") -> dict[str, Role]:
    """`pd` and `vlm`: the components the Kubernetes extras give a disaggregated decode pool and the LLM
    workers behind a processor, so that they never mix with the aggregated `backend` pool."""
    ns = f"{PREFIX}.{namespace}"
    # account info; stream lookup by subject (nats-py KV watch); flow-control replies of ordered consumers
    base = ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "$JS.FC.>"]
    discovery = (_stream_api(f"KV_{INSTANCES_BUCKET}", get=True) + _stream_api(f"KV_{MODELS_BUCKET}", get=True))
    artifacts = _stream_api(f"OBJ_{ARTIFACTS_STORE}", get=True)
    kv_events = _stream_api(f"{PREFIX}-kv-{namespace}")
    nixl = [*_stream_api(f"KV_{NIXL_BUCKET}", consume=False, get=True), f"$KV.{NIXL_BUCKET}.{namespace}.>"]
    hb = f"{ns}.hb"  # lease heartbeats (shared.runtime.heartbeat): every discovery watcher hears them
    sessions = [*_stream_api(f"KV_{SESSIONS_BUCKET}", get=True), f"$KV.{SESSIONS_BUCKET}.{namespace}.>"]

    def inbox(service: str) -> str:
        """A service's replies: JetStream API answers, consumer deliveries and EndpointClient
        streams all go to _INBOX.<service name>.… (protocol.subjects.service_inbox)."""
        return f"_INBOX.{service}.>"

    def worker(component: str | tuple[str, ...], service: str, extra_pub: list[str], extra_js: list[str],
               comment: str, extra_sub: tuple[str, ...] = ()) -> Role:
        comps = (component,) if isinstance(component, str) else component
        own = [s for c in comps for s in (f"{ns}.kv.{c}.*", f"{ns}.load.{c}.*",
                                          f"$KV.{INSTANCES_BUCKET}.{namespace}.{c}.>",
                                          f"$KV.{MODELS_BUCKET}.{namespace}.{c}.*")]
        return Role(
            publish=[*own, hb, f"$O.{ARTIFACTS_STORE}.>", *extra_pub, *base, *discovery, *artifacts, *kv_events,
                     *extra_js],
            subscribe=[*(f"{ns}.{c}.>" for c in comps), inbox(service), hb, *extra_sub], responses=True,
            comment=comment)

    def calls(component: str, endpoint: str) -> list[str]:
        """Requests to an endpoint (any instance or one) and cancels on its component's control subject."""
        return [f"{ns}.{component}.{endpoint}", f"{ns}.{component}.{endpoint}.*", f"{ns}.{component}._control.*"]

    return {
        "setup": Role(
            publish=["$JS.API.>"], subscribe=[inbox("setup")],
            comment="provisioning (python -m shared.cli setup, once per namespace, before the services): the one\n"
                    "role that creates, updates, purges and deletes streams and buckets; publishes no traffic."),
        "frontend": Role(
            publish=[f"{ns}.*.*", f"{ns}.*.*.*", *base, *discovery, *artifacts, *kv_events, *sessions],
            publish_deny=[f"{ns}.kv.>", f"{ns}.load.>"],
            subscribe=[inbox("frontend"), f"{ns}.load.>", hb],
            comment="calls any component's endpoint (any instance or one) and cancels on its control subject;\n"
                    "watches discovery, reads tokenizer files; with --router-mode kv replays KV events and\n"
                    "follows load. May not publish KV events or load (only workers speak for their caches)."),
        "worker": worker(
            backend, "decode", [], [],
            f"aggregated decode worker (component {backend!r}): serves its endpoint and control subject,\n"
            "answers only the inboxes named in requests it received (allow_responses), publishes its own\n"
            "KV events, load, instance record, model card and tokenizer files; reads only its own inboxes."),
        "decode": worker(
            (backend, pd), "decode", [*calls(prefill, "generate"), *calls(router, "route")], nixl,
            f"decode half of a disaggregated pair (component {backend!r} or {pd!r}): a worker that is also a\n"
            f"client of {prefill!r} and of the prefill router ({router!r}, --prefill-router; its streams come\n"
            "to its own inboxes), and publishes its NIXL record."),
        "prefill": worker(
            prefill, "prefill", [], nixl,
            f"prefill worker (component {prefill!r}): like worker; writes KV into decode workers over NIXL."),
        "embedding": worker(
            embedding, "embedding", [], [],
            f"embedding worker (component {embedding!r}, endpoint embed): like worker."),
        "diffusion": worker(
            backend, "diffusion", [], [],
            f"diffusion-LM worker (component {backend!r}): like worker (no KV events)."),
        "encode": worker(
            encode, "encode", [], nixl,
            f"encode worker (component {encode!r}): serves encode, publishes its NIXL record; the readers\n"
            "pull the embeddings over NIXL (not NATS)."),
        "processor": worker(
            processor, "processor", [*calls(encode, "encode"), *calls(backend, "generate"), *calls(vlm, "generate")],
            sessions, f"multimodal processor (component {processor!r}): serves generate and publishes the model card;\n"
            f"a client of {encode!r} and of the LLM workers ({backend!r} or {vlm!r}); with --router-mode kv it\n"
            "replays their KV events and follows their load.",
            extra_sub=(f"{ns}.load.{backend}.*", f"{ns}.load.{vlm}.*")),
        "vlm_worker": worker(
            (backend, vlm), "decode", [], nixl,
            f"LLM worker behind a processor (component {backend!r} or {vlm!r}, --internal): like worker, and\n"
            "reads image embeddings over NIXL (the encode workers' records in the NIXL bucket)."),
        "router": Role(
            publish=[f"$KV.{INSTANCES_BUCKET}.{namespace}.{router}.>", hb, *base, *discovery, *kv_events,
                     *sessions],
            subscribe=[f"{ns}.{router}.>", f"{ns}.load.>", inbox("router"), hb],
            responses=True,
            comment=f"KV router service (component {router!r}, endpoint route): replays every worker's KV\n"
                    "events, follows load, watches instances; reads no one's request traffic."),
        "planner": Role(
            publish=[f"$KV.{MODELS_BUCKET}.parked.{namespace}.*", *base, *discovery],
            subscribe=[f"{ns}.stats.frontend.*", f"{ns}.load.>", f"{ns}.planner.cold_start", inbox("planner"), hb],
            responses=True,
            comment="planner (python -m services.planner): reads the frontends' stats, the workers' load and\n"
                    "discovery; writes the parked-model records (scale from zero) and answers the frontends'\n"
                    "cold-start requests (its connector starts and stops workers)."),
    }


def _arr(items: list[str], indent: str) -> str:
    return "[\n" + "".join(f"{indent}  {json.dumps(s)}\n" for s in items) + f"{indent}]"


HEADER = """\
# shoal: a sample nats-server config, one user per service role, each allowed only the subjects
# that role uses. GENERATED by deploy/nats/render_config.py; edit that, then
#   python deploy/nats/render_config.py > deploy/nats/nats-server.conf
# (tests/integration/test_nats_auth.py fails when the two differ, and runs the services on it).
#
#   export SHOAL_NATS_FRONTEND_PASSWORD=... SHOAL_NATS_WORKER_PASSWORD=...   # one per role
#   nats-server -c deploy/nats/nats-server.conf -sd DATA_DIR
#   NATS_PASSWORD=$SHOAL_NATS_WORKER_PASSWORD python -m services.decode --nats-user worker ...
#   NATS_PASSWORD=$SHOAL_NATS_FRONTEND_PASSWORD python -m services.frontend --nats-user frontend ...
#
# Namespace: {namespace!r}. All users share one account, so this separates roles, not tenants:
# use one NATS account (or server) per tenant. Turn TLS on for anything beyond loopback
# (see docs/DEPLOY.md).
"""


def render(namespace: str = "shoal", passwords: dict[str, str] | None = None, listen: str | None = "127.0.0.1:4222",
           **components: str) -> str:
    """The config text. passwords=None: each user's password is the env variable password_env(role)."""
    lines = [HEADER.replace("{namespace!r}", repr(namespace))]
    if listen:
        lines.append(f"listen: {listen}\n")
    lines.append("# http: 127.0.0.1:8222   # monitoring (/healthz); keep it off public interfaces\n")
    lines.append("max_payload: 8MB\n\n# JetStream on: KV discovery, object store, KV-event replay. Data dir: -sd DIR.\n"
                 "jetstream {\n  max_memory_store: 256MB\n  max_file_store: 8GB\n}\n\n")
    lines.append("authorization {\n  timeout: 2\n  users = [\n")
    for name, role in roles(namespace, **components).items():
        pw = f"${password_env(name)}" if passwords is None else json.dumps(passwords[name])
        lines.append("".join(f"    # {c}\n" for c in f"{name}: {role.comment}".splitlines()))
        ind = "        "
        pub = f"{ind}publish: {{\n{ind}  allow: {_arr(role.publish, ind + '  ')}\n"
        if role.publish_deny:
            pub += f"{ind}  deny: {_arr(role.publish_deny, ind + '  ')}\n"
        pub += f"{ind}}}\n"
        sub = f"{ind}subscribe: {{\n{ind}  allow: {_arr(role.subscribe, ind + '  ')}\n"
        if role.subscribe_deny:
            sub += f"{ind}  deny: {_arr(role.subscribe_deny, ind + '  ')}\n"
        sub += f"{ind}}}\n"
        resp = f"{ind}allow_responses: {{ max: {RESPONSES['max']}, expires: \"{RESPONSES['expires']}\" }}\n" \
            if role.responses else ""
        lines.append(f"    {{\n      user: {name}\n      password: {pw}\n      permissions: {{\n{pub}{sub}{resp}"
                     f"      }}\n    }}\n")
    lines.append("  ]\n}\n")
    return "".join(lines)


def markdown(namespace: str = "shoal", **components: str) -> str:
    """The roles' permissions as a Markdown table (docs/SECURITY-infra.md embeds it; a test keeps them equal)."""
    def cell(items: list[str]) -> str:
        return "<br>".join(f"`{s}`" for s in items) if items else "(none)"

    rows = ["| role | may publish | may not publish | may subscribe | answers requests it got |",
            "|---|---|---|---|---|"]
    for name, role in roles(namespace, **components).items():
        rows.append(f"| **{name}** | {cell(role.publish)} | {cell(role.publish_deny)} | {cell(role.subscribe)} | "
                    f"{'yes' if role.responses else 'no'} |")
    return "\n".join(rows) + "\n"


def write(path: Path, namespace: str = "shoal", passwords: dict[str, str] | None = None,
          listen: str | None = "127.0.0.1:4222") -> Path:
    path.write_text(render(namespace, passwords, listen))
    path.chmod(0o600)  # it may hold passwords
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--namespace", default="shoal")
    p.add_argument("--listen", default="127.0.0.1:4222", help="host:port, or '' to leave it to -a/-p")
    p.add_argument("--markdown", action="store_true", help="the roles' permissions as a Markdown table instead")
    ns = p.parse_args(argv)
    sys.stdout.write(markdown(ns.namespace) if ns.markdown else render(ns.namespace, None, ns.listen or None))


if __name__ == "__main__":
    main()
