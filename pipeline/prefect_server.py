"""Prefect's temporary local server, started early in the background for ``onedge run``."""

from __future__ import annotations

import threading


def start_prefect_server() -> threading.Thread | None:
    """Start Prefect's temporary local server in a background thread, when the flow will need
    one (no ``PREFECT_API_URL``); join the thread before calling the flow.

    The server is a child process that takes seconds to start; started first, it runs on the
    other core while this process imports torch and the flows. The flow then finds it running
    (Prefect keeps one temporary server per process). If it fails to start here, the flow starts
    it again and reports the error.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer

        try:
            SubprocessASGIServer().start()
        except Exception:  # the flow's own start raises it with Prefect's message
            return

    thread = threading.Thread(target=start, name="prefect-server", daemon=True)
    thread.start()
    return thread
