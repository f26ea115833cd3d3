"""python -m services.router: parse args -> KV router fed from NATS -> serve `route`."""

from __future__ import annotations

import sys

from protocol.messages import RouteRequest, RouteResponse
from services.router.args import parse
from services.router.handler import RouteHandler
from shared.runtime.client import EndpointClient
from shared.runtime.server import EndpointServer
from shared.runtime.service import Service, run


async def amain(argv: list[str]) -> None:
    cfg = parse(argv)
    async with Service("router", cfg.common) as svc:
        router = cfg.router.make(runtime=svc.rt, component=cfg.worker_component, page_size=cfg.page_size)
        await router.start()
        workers: EndpointClient[RouteResponse] = EndpointClient(svc.rt, cfg.worker_component, cfg.worker_endpoint,
                                                                RouteResponse)
        live: set[str] = set()

        def on_change(iid: str, rec: object) -> None:
            if rec is None:
                live.discard(iid)
                router.remove_instance(iid)
            else:
                live.add(iid)
                router.add_instance(iid)

        workers.add_listener(on_change)
        await workers.start()
        server = EndpointServer(svc.rt, cfg.component, "route", RouteHandler(router, live), RouteRequest)
        await server.start()
        await server.register()
        svc.set_ready()
        svc.log.info("router_ready", routes_for=cfg.worker_component)
        await svc.stopped()
        await server.drain(5)
        await workers.stop()
        await router.stop()


def main() -> None:
    run(lambda: amain(sys.argv[1:]))


if __name__ == "__main__":
    main()
