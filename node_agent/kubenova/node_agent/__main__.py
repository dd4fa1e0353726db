"""`python -m kubenova.node_agent`: the agent of the host named by $NODE_NAME."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from prometheus_client import start_http_server

from kubenova.kube import client, logs
from kubenova.node_agent import config
from kubenova.node_agent.agent import Agent


async def _run(cfg: config.AgentConfig) -> None:
    agent = Agent(cfg, client.api_client())
    task = asyncio.current_task()
    assert task is not None, "called from asyncio.run"
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run()


def main() -> int:
    logs.setup("node-agent")
    try:
        cfg = config.from_env(os.environ)
    except config.ConfigError as e:
        print(f"kubenova node agent: {e}", file=sys.stderr)
        return 2
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port)
    asyncio.run(_run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
