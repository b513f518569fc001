"""Run in a fresh interpreter by tests/service/jobs/test_ray_encode.py: Ray is started by each run's own
process (as `asen encode` does), never inside the test process, whose state after hundreds of tests
(threads, gRPC servers, open files) has kept Ray's node from starting there."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from asen_search.service.jobs.ray_encode import EncodeConfig, ShardEncoder, encode_with_ray
from asen_search.service.jobs.sources import read_catalogue


class DiesOnceOnShardTwo(ShardEncoder):
    """Kills its own process the first time it starts shard 2 (a marker file remembers it)."""

    def before_shard(self, number: int) -> None:
        marker = self.out / "died-once"
        if number == 2 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)


if __name__ == "__main__":  # CHECKPOINT LISTING OUT SHARD_SIZE: encode with the dying actor class
    checkpoint, listing, out, shard_size = sys.argv[1:5]
    report = encode_with_ray(
        EncodeConfig(
            Path(checkpoint), Path(out), "local", actors=2, batch_size=16, shard_size=int(shard_size)
        ),
        read_catalogue(listing, allow_any_url=True),
        actor_class=DiesOnceOnShardTwo,
    )
    print(report.summary())
