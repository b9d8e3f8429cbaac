"""``python -m retriever.ray_serve --index ROOT --replicas N``: the HTTP API on Ray Serve replicas.

Each replica is the ``RetrievalService`` the plain server runs: it opens the index root itself
(memory-mapped, so replicas on one node share the page cache), loads its retrievers, and serves
``retriever.server.app.create_app`` behind Ray's HTTP proxy, one proxy per node. Same API, same code
path, same answers; Ray adds placement (``--num-gpus-per-replica``), restarts of failed replicas
(``check_health`` fails when a worker thread died), and routing across nodes. The index root
must exist at the same path on every node that runs a replica (shared filesystem or a copy).

Ray is imported only by this module and ``index_build.encode_ray`` (the ``ray`` extra).

    python -m retriever.ray_serve --index idx --replicas 2 --host 0.0.0.0 --address auto
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from .service_config import ServiceConfig

log = logging.getLogger(__name__)

__all__ = ["DeploymentOptions", "ServiceReplica", "build_app", "code_runtime_env", "deploy", "main"]


def _opt(default, help_text: str, flag: str | None = None):
    metadata = {"help": help_text} if flag is None else {"help": help_text, "flag": flag}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DeploymentOptions:
    """How many replicas, what each one holds, and how the proxy reaches them; each field is a
    flag of ``python -m retriever.ray_serve``."""

    replicas: int = _opt(1, "Serve replicas")
    num_cpus: float = _opt(1.0, "CPUs each replica holds", "--num-cpus-per-replica")
    # Ray sets CUDA_VISIBLE_DEVICES; the replica uses "cuda"
    num_gpus: float = _opt(0.0, "GPUs each replica holds", "--num-gpus-per-replica")
    # per replica; Serve's default (5) would starve coalescing
    max_ongoing_requests: int = _opt(256, "requests in flight per replica")
    health_check_period_s: float = _opt(
        10.0, "how often Serve checks each replica (a failed one is replaced)"
    )
    access_log: bool = _opt(False, "Serve's per-request log line (costly at thousands/s)")
    name: str = _opt("retriever", "Serve application name (one per index root)")
    route_prefix: str = _opt("/", "URL path of this index: /wiki18, /wiki2024, ...")

    def __post_init__(self):
        if self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"--route-prefix must start with /, got {self.route_prefix!r}")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ValueError("--num-cpus-per-replica and --num-gpus-per-replica must be >= 0")


class ServiceReplica:
    """One Serve replica: a started ``RetrievalService`` and the FastAPI app over it.

    ``bind_host``: the address Serve's proxy listens on, so the replica checks ``Host`` as the
    plain server does (without it, only when ``--allowed-hosts`` is given)."""

    def __init__(self, config: ServiceConfig, bind_host: str | None = None):
        self.bind_host = bind_host
        from .service import RetrievalService  # in the replica only: the driver loads no index

        self.service = RetrievalService(config)
        self.service.start()  # the replica counts as up only once the index is loaded

    def __serve_build_asgi_app__(self):
        from .app import create_app

        return create_app(self.service, bind_host=self.bind_host)

    def check_health(self) -> None:
        """Serve restarts the replica when this raises (a worker thread died)."""
        report = self.service.health()
        if not report["ready"]:
            raise RuntimeError(f"retrieval service is {report['status']}: {report}")

    def __del__(self):
        service = getattr(self, "service", None)
        if service is not None:
            service.stop()


def code_runtime_env(*packages: str) -> dict:
    """A Ray ``runtime_env`` shipping these local packages to every worker (``py_modules``), so
    a cluster runs the driver's code even where it is not installed (or is another version)."""
    import importlib

    dirs = [str(Path(importlib.import_module(p).__file__).parent) for p in packages]
    return {"py_modules": dirs}


def build_app(
    config: ServiceConfig,
    options: DeploymentOptions = DeploymentOptions(),
    bind_host: str | None = None,
):
    """The Serve application: ``options.replicas`` copies of ``ServiceReplica(config,
    bind_host)``; ``bind_host`` is the proxy's address, for the ``Host`` check."""
    from ray import serve

    if options.num_gpus > 0 and config.device is None:
        config = replace(config, device="cuda")  # the GPUs Ray gave this replica
    actor_options = {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}
    deployment = serve.deployment(
        serve.ingress()(ServiceReplica),
        name=options.name,
        num_replicas=options.replicas,
        ray_actor_options=actor_options,
        max_ongoing_requests=options.max_ongoing_requests,
        health_check_period_s=options.health_check_period_s,
        logging_config={"enable_access_log": options.access_log},
    )
    return deployment.bind(config, bind_host)


def deploy(
    config: ServiceConfig,
    options: DeploymentOptions = DeploymentOptions(),
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    ship_code: bool = True,
) -> list[str]:
    """Start (or join) Ray and Serve, deploy, wait until every replica is loaded.

    ``address``: ``None`` starts a local Ray unless this process is already connected; ``auto``
    joins the cluster of this node; ``ray://HEAD:10001`` joins from outside. ``ship_code``: send
    this checkout's ``retriever`` package with the job (when this call connects). Returns the
    proxy URLs (one per node running a proxy), ready for ``HTTPClient(urls)``.
    """
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            runtime_env=code_runtime_env("retriever") if ship_code else None,
        )
    serve.start(proxy_location="EveryNode", http_options={"host": host, "port": port})
    host, port = _serving_address(host, port)
    app = build_app(config, options, bind_host=host)
    serve.run(app, name=options.name, route_prefix=options.route_prefix, blocking=False)
    prefix = options.route_prefix.rstrip("/")
    return [url + prefix for url in proxy_urls(port, host)]


def _serving_address(host: str, port: int) -> tuple[str, int]:
    """Where Serve's proxies listen: a Serve already running on the cluster keeps its own."""
    try:
        from ray.serve.context import _get_global_client

        config = _get_global_client().http_config
        actual = (config.host, int(config.port))
    except Exception:  # private API: keep what was asked for
        return host, port
    if actual != (host, port):
        log.warning(
            "Serve already runs on this cluster with its proxies on %s:%d; the application is "
            "served there (not on %s:%d)", actual[0], actual[1], host, port,
        )  # fmt: skip
    return actual


def proxy_urls(port: int, host: str = "127.0.0.1") -> list[str]:
    """``http://NODE_IP:PORT`` of every alive node (``host`` itself when it is not 0.0.0.0)."""
    import ray

    if host not in ("0.0.0.0", "::"):
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) <= 1:
            return [f"http://{host}:{port}"]
    ips = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})
    return [f"http://{ip}:{port}" for ip in ips]


def build_parser():
    """The server's flags plus one per ``DeploymentOptions`` field and the Ray connection."""
    from ..cli import add_config_arguments
    from .app import build_parser as server_parser

    p = server_parser()
    p.prog = "python -m retriever.ray_serve"
    p.description = __doc__
    add_config_arguments(p.add_argument_group("deployment"), DeploymentOptions)
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto (this node's), ray://HEAD:10001; default: start a local one",
    )
    p.add_argument(
        "--no-ship-code",
        action="store_true",
        help="use the retriever package installed on the nodes instead of this checkout's",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="deploy and exit; the app keeps running (stop it with: serve shutdown)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from ..cli import configure_process, start_logging
    from ..errors import RetrieverError

    configure_process()
    from ..cli import config_from_args as flags_to_config
    from .app import checked_config

    args = build_parser().parse_args(argv)
    start_logging(args.log_level)
    try:
        config, _ = checked_config(args)
        if args.workers != 1:
            raise RetrieverError("--workers is for python -m retriever.server: give --replicas")
        options = flags_to_config(DeploymentOptions, args)
        config = replace(config, index=str(Path(config.index).resolve()))
    except (RetrieverError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import ray
        from ray import serve
    except ImportError:
        print("error: Ray is not installed: pip install 'wikisearch-env[ray]'", file=sys.stderr)
        return 2
    started_ray = not ray.is_initialized()
    try:
        urls = deploy(
            config,
            options,
            host=args.host,
            port=args.port,
            address=args.address,
            ship_code=not args.no_ship_code,
        )
    except Exception as exc:  # a replica failed to load: Serve gives up after a few tries
        print(f"error: deploying {config.index} on Ray Serve failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"ray_serve: {options.replicas} replicas of {config.index} ready at {','.join(urls)}",
        flush=True,
    )
    written = []
    if args.save_address_to:  # one ASearcher address file per node's proxy
        from ..addresses import write_address

        for url in urls:
            host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            written.append(write_address(args.save_address_to, host, int(port)))
    if args.detach:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    log.info("stopping application %s", options.name)
    for path in written:
        path.unlink(missing_ok=True)
    serve.delete(options.name)
    if started_ray:
        serve.shutdown()
        ray.shutdown()
    return 0
