"""Run the app on uvicorn with the model and index loaded (and checked) before the port opens."""
from __future__ import annotations

import logging
import os
import time

from service.settings import Settings


def prefer_passive_openmp() -> None:
    """Unless the environment says otherwise, make idle OpenMP threads sleep instead of spin.

    torch and faiss each bring their own OpenMP runtime; with both in one process on few cores
    (or beside another busy process), threads left spinning after a parallel region starve the
    others. Measured on 2 shared cores while a training run was also using them: bench/search_latency.py
    (tiny model, 3000 items, one client) p50 175 ms spinning vs 8 ms passive; one full-size query
    encode 1.5-2 s vs 40 ms. Remeasure on an idle machine. Only effective before torch and faiss load.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def serve(settings: Settings) -> None:
    import uvicorn

    from service.app import create_app
    from service.runtime import load_resources

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.monotonic()
    print(f"loading model {settings.checkpoint} and index {settings.index} ...", flush=True)
    encoder, catalogue = load_resources(settings)
    print(f"loaded {len(catalogue)} items, {len(catalogue.attributes)} attributes in {time.monotonic() - start:.1f} s; "
          f"serving on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    app = create_app(settings, encoder, catalogue)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
