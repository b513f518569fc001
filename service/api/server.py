"""Run the app on uvicorn with the model and index loaded (and checked) before the port opens."""

from __future__ import annotations

import logging
import time

from asen_search.service.api.settings import Settings


def prefer_passive_openmp() -> None:
    """Unless the environment says otherwise, make idle OpenMP threads sleep instead of spin.

    torch and faiss each bring their own OpenMP runtime; with both in one process on few cores
    (or beside another busy process), threads left spinning after a parallel region starve the
    others. On an idle 2-core machine the demo's /search served 14.0 req/s spinning vs 20.1 passive
    with one client, 15.9 vs 23.7 with eight (docs/results.md, bench/search_latency.py).
    Only effective before torch and faiss load.
    """
    from asen_search.model.tuning import prefer_sleeping_threads  # imports neither torch nor faiss

    prefer_sleeping_threads()


def serve(settings: Settings) -> None:
    import uvicorn

    from asen_search.service.api.app import create_app
    from asen_search.service.resources import load_resources

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    start = time.monotonic()
    print(f"loading model {settings.checkpoint} and index {settings.index} ...", flush=True)
    encoder, catalogue = load_resources(settings)
    print(
        f"loaded {len(catalogue)} items, {len(catalogue.attributes)} attributes in {time.monotonic() - start:.1f} s; "
        f"serving on http://{settings.host}:{settings.port} (API docs at /docs)",
        flush=True,
    )
    app = create_app(settings, encoder, catalogue)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
