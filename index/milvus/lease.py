"""One writer at a time across every process writing a Milvus catalogue (service replicas, jobs):
a lease held in a small side collection (`<collection>_writers`), so that add-if-absent is a real
promise and no write interleaves with another's.

Milvus has no compare-and-set, but its `Strong` reads are linearizable (every insert is stamped by
one timestamp oracle, and a Strong read waits for everything stamped before it). On that, a
claim-then-look protocol gives mutual exclusion:

1. insert a claim row (a fresh random holder id, an expiry `ttl` from now);
2. read every live claim (expiry in the future);
3. if the only live claim is our own, the lease is ours; otherwise delete our claim, back off a
   random moment and try again (until `wait` has passed: CatalogueBusy).

Two writers cannot both see only their own claim: whichever inserted last reads after both claims
exist. Both may see both and retreat (then both retry with random pauses). A holder that dies leaves
a claim that counts until it expires (`ttl`, default 30 s); a holder checks, before each write it
makes under the lease, that its claim has at least `margin` left (else CatalogueBusy, nothing
written), so an expired lease is never used. Expiry compares wall clocks: the processes sharing a
catalogue need clocks within `margin` of each other (NTP).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import CatalogueBusy
from .expressions import literal

LEASE_SUFFIX = "_writers"
TTL_S = 30.0
MARGIN_S = 5.0
WAIT_S = 10.0


def lease_collection(collection: str) -> str:
    return collection + LEASE_SUFFIX


def create_lease_collection(client: Any, collection: str) -> None:
    """The side collection of `collection`'s writer claims (a vector field is mandatory in Milvus: a
    2-d placeholder)."""
    from pymilvus import DataType, MilvusClient

    name = lease_collection(collection)
    if client.has_collection(name):
        return
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("holder", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("expires", DataType.DOUBLE)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
    indexes = client.prepare_index_params()
    indexes.add_index(field_name="v", index_type="FLAT", metric_type="L2")
    client.create_collection(
        name, schema=schema, index_params=indexes, consistency_level="Strong", num_shards=1
    )


class WriterLease:
    """The lease of one catalogue, for one process; `held()` around each write."""

    def __init__(
        self,
        client: Any,
        collection: str,
        ttl_s: float = TTL_S,
        margin_s: float = MARGIN_S,
        wait_s: float = WAIT_S,
        clock: Any = time.time,
    ) -> None:
        self.client, self.collection = client, lease_collection(collection)
        self.ttl_s, self.margin_s, self.wait_s, self.clock = ttl_s, margin_s, wait_s, clock
        self._expires = 0.0

    def _live_claims(self, now: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.query(
            self.collection,
            filter=f"expires > {now!r}",
            output_fields=["holder", "expires"],
            consistency_level="Strong",
        )
        return rows

    def _delete(self, holder: str) -> None:
        self.client.delete(self.collection, filter=f"holder == {literal(holder)}")

    def acquire(self) -> str:
        """Claim the lease; CatalogueBusy after `wait_s` of other writers holding it."""
        deadline = time.monotonic() + self.wait_s
        for attempt in range(1_000_000):
            holder = uuid.uuid4().hex
            now = self.clock()
            self.client.insert(
                self.collection, [{"holder": holder, "expires": now + self.ttl_s, "v": [0.0, 0.0]}]
            )
            live = self._live_claims(now)
            if [row["holder"] for row in live] == [holder]:
                self._expires = now + self.ttl_s
                return holder
            self._delete(holder)
            self.client.delete(self.collection, filter=f"expires <= {now!r}")  # claims of writers that died
            if time.monotonic() >= deadline:
                raise CatalogueBusy(
                    f"another writer has held this catalogue for {self.wait_s:g} s "
                    f"({len(live) - 1} other claims): retry"
                )
            time.sleep(random.uniform(0.01, 0.05) * min(attempt + 1, 8))
        raise AssertionError("unreachable")

    def check(self) -> None:
        """CatalogueBusy unless the lease has at least `margin_s` left (call before each engine write)."""
        if self.clock() > self._expires - self.margin_s:
            raise CatalogueBusy(
                "the write took longer than its writer lease allows; nothing more was written: retry"
            )

    @contextmanager
    def held(self) -> Iterator[None]:
        holder = self.acquire()
        try:
            yield
        finally:
            self._expires = 0.0
            self._delete(holder)
