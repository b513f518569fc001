"""The load test's request mix, as locust users (`bench/load_test.py` starts the server, runs this
file with `locust --headless` and checks the catalogue afterwards).

Each user mixes image searches, id searches, reranks, adds and deletes by the weights in
`ASEN_LOAD_MIX`. Adds use fresh ids `load-<user>-<n>`; a delete removes one of the user's own
acknowledged adds or (about one delete in ten, or when it has none) an original item no other user
touches, so the expected final catalogue is known exactly. The ledger records each write's outcome:
an add is acknowledged on 200/201, a delete on 200; other 4xx answers changed nothing; a 5xx or a
transport failure leaves the write UNKNOWN (either outcome is accepted later). Writes are never
retried; after 429/503 with Retry-After a user waits (at most 5 s). A 5xx, a transport failure or
an answer that breaks the API's promises is a locust failure; 429/503/504 are load shedding, counted
by status. At the end the ledger is written to `ASEN_LOAD_LEDGER` (JSON) for the catalogue check.

Inputs (environment, set by bench/load_test.py): ASEN_LOAD_PLAN, a JSON file with `api_key`,
`attributes`, `originals` (the ids at start), `images` (query/add image files), `mix` and `seed`;
ASEN_LOAD_LEDGER, where the ledger goes.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
from locust import HttpUser, constant, events
from locust.env import Environment

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"
ROUTES = ("search-image", "search-id", "rerank", "add", "delete")
MAX_BACKOFF_S = 5.0
PLAN: dict[str, Any] = (
    json.loads(Path(os.environ["ASEN_LOAD_PLAN"]).read_text())
    if "ASEN_LOAD_PLAN" in os.environ
    else {
        "api_key": "",
        "attributes": [],
        "originals": [],
        "images": [],
        "mix": {r: 1 for r in ROUTES},
        "seed": 0,
    }
)
IMAGES = [Path(p).read_bytes() for p in PLAN["images"]]


@dataclass
class Ledger:
    """The writes and their outcomes, shared by all users. Original items are deleted by at most one
    user (`claimed`), a user's adds only by that user, so every id's state is exact except after a
    5xx or a transport failure (UNKNOWN)."""

    originals: list[str]
    state: dict[str, str] = field(default_factory=dict)  # every id a write touched
    sent_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    live_adds: list[str] = field(default_factory=list)  # acknowledged adds not deleted: query ids
    claimed: set[str] = field(default_factory=set)  # originals some user deletes (or deleted)
    delete_attempted: set[str] = field(default_factory=set)  # a 404 for these is expected
    unknown_cause: dict[str, str] = field(default_factory=dict)  # id -> "add 504", "delete 0", ...
    anomalies: list[str] = field(default_factory=list)
    acked: dict[str, int] = field(default_factory=lambda: {"add": 0, "delete": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def query_id(self, rng: random.Random) -> str:
        with self.lock:
            if self.live_adds and rng.random() < 0.2:
                return rng.choice(self.live_adds)
            return rng.choice(self.originals)

    def claim_original(self, rng: random.Random) -> str | None:
        with self.lock:
            for _ in range(50):
                item = rng.choice(self.originals)
                if item not in self.claimed:
                    self.claimed.add(item)
                    self.delete_attempted.add(item)
                    return item
        return None

    def unexpected_404(self, item_id: str) -> bool:
        """A query by `item_id` got 404: wrong unless a delete of it was attempted."""
        with self.lock:
            return item_id not in self.delete_attempted

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "state": self.state,
                "sent_metadata": self.sent_metadata,
                "claimed": sorted(self.claimed),
                "unknown_cause": self.unknown_cause,
                "anomalies": self.anomalies,
                "acked": self.acked,
            }


LEDGER = Ledger(list(PLAN["originals"]))
STATUSES: dict[str, dict[int, int]] = {route: {} for route in ROUTES}  # route -> status -> answers (0: none)
_numbers = itertools.count()


@events.quitting.add_listener
def _write_ledger(environment: Environment, **_: Any) -> None:
    if "ASEN_LOAD_LEDGER" in os.environ:
        Path(os.environ["ASEN_LOAD_LEDGER"]).write_text(
            json.dumps({**LEDGER.to_json(), "statuses": STATUSES})
        )


def _unknown(item_id: str, route: str, status: int) -> None:
    LEDGER.state[item_id] = UNKNOWN
    LEDGER.unknown_cause[item_id] = f"{route} {status}"


class CatalogueUser(HttpUser):
    """One simulated client: its own connection, random stream and adds."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.number = next(_numbers)
        self.rng = random.Random(PLAN["seed"] * 1000 + self.number)
        self.own_adds: list[str] = []  # acknowledged, not deleted
        self.added = 0
        self.client.headers["X-API-Key"] = PLAN["api_key"]

    # one request: 5xx and transport failures are failures; Retry-After is honoured -----------
    def _send(self, route: str, method: str, url: str, check: Any = None, **kwargs: Any) -> int:
        with self.client.request(method, url, name=route, catch_response=True, **kwargs) as response:
            status = response.status_code or 0
            counts = STATUSES[route]
            counts[status] = counts.get(status, 0) + 1
            if status == 0 or status >= 500 and status not in (503, 504):
                response.failure(f"{status}: {(response.text or str(response.error))[:200]}")
            elif status == 200 and check is not None and (problem := check(response.json())):
                response.failure(problem)
                with LEDGER.lock:
                    LEDGER.anomalies.append(f"invalid {route} answer: {problem}")
            else:
                response.success()  # 4xx answers are the API's answers; 503/504 are load shedding
            if status in (429, 503):
                try:
                    pause = float(response.headers.get("retry-after", "1"))
                except ValueError:
                    pause = 1.0
                gevent.sleep(min(MAX_BACKOFF_S, max(0.0, pause)))
            return status

    def _image(self) -> tuple[str, bytes, str]:
        data = self.rng.choice(IMAGES)
        return ("q.png", data, "image/png") if data[:4] == b"\x89PNG" else ("q.jpg", data, "image/jpeg")

    # the routes ------------------------------------------------------------------------------
    def search_image(self) -> None:
        top_k = self.rng.choice((5, 10, 20, 50))
        form = {"attribute": self.rng.choice(PLAN["attributes"]), "top_k": str(top_k)}
        self._send(
            "search-image",
            "POST",
            "/search",
            data=form,
            files={"image": self._image()},
            check=lambda body: None if len(body["results"]) <= top_k else f"{len(body['results'])} > top_k",
        )

    def search_id(self) -> None:
        item_id = LEDGER.query_id(self.rng)
        top_k = self.rng.choice((5, 10, 20, 50))
        form = {"attribute": self.rng.choice(PLAN["attributes"]), "item_id": item_id, "top_k": str(top_k)}

        def check(body: dict[str, Any]) -> str | None:
            ids = [hit["id"] for hit in body["results"]]
            return (
                None
                if len(ids) <= top_k and item_id not in ids
                else f"query {item_id}: {len(ids)} results, itself included: {item_id in ids}"
            )

        if self._send(
            "search-id", "POST", "/search", data=form, check=check
        ) == 404 and LEDGER.unexpected_404(item_id):
            with LEDGER.lock:
                LEDGER.anomalies.append(f"search-id: 404 for {item_id}, which nobody tried to delete")

    def rerank(self) -> None:
        candidates = [self.rng.choice(LEDGER.originals) for _ in range(20)]
        candidates += [LEDGER.query_id(self.rng) for _ in range(3)]
        missing = f"load-missing-{self.number}-{self.rng.randrange(10**9)}"
        candidates.append(missing)
        self.rng.shuffle(candidates)
        form: dict[str, Any] = {
            "attribute": self.rng.choice(PLAN["attributes"]),
            "candidates": candidates,
            "weight": f"{self.rng.random():.3f}",
        }
        unique = set(candidates)

        def check(body: dict[str, Any]) -> str | None:
            ranked, unknown = [hit["id"] for hit in body["results"]], body["unknown"]
            ok = (
                missing in unknown
                and set(ranked) <= unique
                and len(ranked) + len(unknown) == len(unique)
                and len(set(ranked)) == len(ranked)
            )
            return (
                None if ok else f"{len(ranked)} ranked + {len(unknown)} unknown of {len(unique)} candidates"
            )

        if self.rng.random() < 0.5:
            query_id = form["item_id"] = LEDGER.query_id(self.rng)
            if self._send(
                "rerank", "POST", "/rerank", data=form, check=check
            ) == 404 and LEDGER.unexpected_404(query_id):
                with LEDGER.lock:
                    LEDGER.anomalies.append(
                        f"rerank: 404 for query item {query_id}, which nobody tried to delete"
                    )
        else:
            self._send("rerank", "POST", "/rerank", data=form, files={"image": self._image()}, check=check)

    def add(self) -> None:
        item_id = f"load-{self.number}-{self.added}"
        self.added += 1
        metadata = {
            "source": "load",
            "client": self.number,
            "n": self.added - 1,
            "category": self.rng.choice(("dress", "shirt", "coat")),
        }
        with LEDGER.lock:
            LEDGER.sent_metadata[item_id] = metadata
        status = self._send(
            "add",
            "POST",
            "/items",
            data={"id": item_id, "metadata": json.dumps(metadata)},
            files={"image": self._image()},
        )
        with LEDGER.lock:
            if status in (200, 201):
                LEDGER.state[item_id] = PRESENT
                LEDGER.acked["add"] += 1
                LEDGER.live_adds.append(item_id)
                self.own_adds.append(item_id)
                if status == 200:
                    LEDGER.anomalies.append(f"add {item_id}: 200 (replaced) for a fresh id")
            elif status == 409:
                _unknown(item_id, "add", status)
                LEDGER.anomalies.append(f"add {item_id}: 409 for a fresh id")
            elif 400 <= status <= 499:
                LEDGER.state[item_id] = ABSENT  # refused: nothing changed
            else:
                _unknown(item_id, "add", status)

    def delete(self) -> None:
        own = bool(self.own_adds) and self.rng.random() < 0.9
        if own:
            item_id = self.own_adds.pop(self.rng.randrange(len(self.own_adds)))
            with LEDGER.lock:
                LEDGER.delete_attempted.add(item_id)
        else:
            claimed = LEDGER.claim_original(self.rng)
            if claimed is None:
                self.add()
                return
            item_id = claimed
        status = self._send("delete", "DELETE", f"/items/{quote(item_id, safe='')}")
        with LEDGER.lock:
            if item_id in LEDGER.live_adds:
                LEDGER.live_adds.remove(item_id)
            if status == 200:
                LEDGER.state[item_id] = ABSENT
                LEDGER.acked["delete"] += 1
            elif status == 404:
                _unknown(item_id, "delete", status)
                LEDGER.anomalies.append(f"delete {item_id}: 404, but it should be present")
            elif 400 <= status <= 499:
                LEDGER.state[item_id] = PRESENT  # refused: still there
                if own:
                    self.own_adds.append(item_id)
                    LEDGER.live_adds.append(item_id)
            else:
                _unknown(item_id, "delete", status)

    # the weights come from the plan (locust's `tasks` dict: function -> integer weight)
    tasks = {
        fn: int(PLAN["mix"].get(route, 0))
        for route, fn in (
            ("search-image", search_image),
            ("search-id", search_id),
            ("rerank", rerank),
            ("add", add),
            ("delete", delete),
        )
    }
    tasks = {fn: weight for fn, weight in tasks.items() if weight > 0}
