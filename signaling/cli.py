"""`fileshare-signal`: run one signaling server instance until SIGTERM or SIGINT, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import sys

from signaling import config as config_module
from signaling.logs import setup_logging
from signaling.server import SignalingServer, log, open_backend


async def serve(cfg: config_module.Config) -> None:
    store, bus = open_backend(cfg)
    server = SignalingServer(cfg, store, bus)
    port = await server.start(cfg.host, cfg.port)
    log.info(
        "listening on %s:%s (instance %s, store %s)",
        cfg.host,
        port,
        cfg.instance_id,
        "redis" if cfg.redis_url else "memory",
        extra={"event": "listening", "port": port},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    log.info("stopped")


def raise_open_files_limit() -> int:
    """Every client holds a socket, and the usual soft limit (1024) would cap an instance far
    below its capacity: take the soft limit up to the hard one. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = config_module.load(argv)
    except (ValueError, OSError) as exc:
        print(f"fileshare-signal: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.log_level, cfg.log_json, cfg.log_lines_per_second)
    raise_open_files_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(serve(cfg))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
