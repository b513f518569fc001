"""Live writes are in the write-ahead log before they are acknowledged; a write that storage
refuses (disk full, unwritable directory) is a clear 5xx and changes nothing; a save killed midway
leaves the previous index loadable and complete."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.index import FaissCatalogue
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from tests.helpers import ROOT
from tests.helpers.models import image_bytes
from tests.helpers.serving import read_only_mounts_allowed
from tests.helpers.wal import file_size_limit


def _picture(demo_dataset: Path, fid: int = 3) -> dict[str, tuple[str, bytes, str]]:
    return {
        "image": ("p.jpg", image_bytes(demo_dataset / "images" / "train" / f"{fid:05d}.jpg"), "image/jpeg")
    }


def _assert_complete(index_dir: Path, n_items: int, absent: str) -> None:
    catalogue = FaissCatalogue.load(index_dir)
    assert len(catalogue) == n_items and absent not in catalogue
    for attribute in catalogue.attributes:
        hits = catalogue.search(catalogue.vector("test-00000", attribute), attribute, k=3)
        assert hits[0].id == "test-00000"


def test_disk_full_write_is_507_and_changes_nothing(
    client: TestClient, settings: Settings, demo_dataset: Path, n_items: int
) -> None:
    """A real kernel refusal (EFBIG, as when the disk or quota is full) while the write is logged:
    507 JSON, nothing applied or left on disk, searches go on, and writes work again afterwards."""
    catalogue = client.app.state.service_state.catalogue  # type: ignore[attr-defined]
    picture = _picture(demo_dataset)
    assert (
        client.post("/items", data={"id": "warm"}, files=picture).status_code == 201
    )  # image stored already
    size = catalogue.log_size
    with file_size_limit(size + 20):  # every record is longer: each is cut off midway
        response = client.post("/items", data={"id": "new-1"}, files=picture)
        assert response.status_code == 507, response.text
        assert response.json()["error"] == "insufficient_storage" and "no space" in response.json()["detail"]
        deleted = client.delete("/items/test-00004")
        assert deleted.status_code == 507 and deleted.json()["error"] == "insufficient_storage"
        search = client.post("/search", data={"attribute": "colour", "item_id": "test-00004", "top_k": "3"})
        assert search.status_code == 200 and len(search.json()["results"]) == 3
    assert (
        client.get("/items/new-1").status_code == 404 and client.get("/items/test-00004").status_code == 200
    )
    assert catalogue.log_size == size
    _assert_complete(settings.index, n_items + 1, "new-1")
    assert client.post("/items", data={"id": "new-1"}, files=picture).status_code == 201
    assert "new-1" in FaissCatalogue.load(settings.index)


def test_image_store_full_is_507(client: TestClient, demo_dataset: Path) -> None:
    with file_size_limit(100):  # the upload itself cannot be stored
        response = client.post("/items", data={"id": "new-2"}, files=_picture(demo_dataset, 7))
    assert response.status_code == 507 and response.json()["error"] == "insufficient_storage", response.text
    assert client.get("/items/new-2").status_code == 404


UNWRITABLE = textwrap.dedent("""
    import os, sys
    from fastapi.testclient import TestClient
    from asen_search.service.api.app import create_app
    from asen_search.service.api.settings import Settings

    image = open(sys.argv[3], "rb").read()
    if sys.argv[4] == "nobody":  # root writes anywhere: drop to nobody for a real EACCES
        os.setgid(65534)
        os.setuid(65534)
    settings = Settings(checkpoint=sys.argv[1], index=sys.argv[2])
    with TestClient(create_app(settings)) as client:
        added = client.post("/items", data={"id": "nope"}, files={"image": ("a.jpg", image, "image/jpeg")})
        deleted = client.delete("/items/test-00001")
        search = client.post("/search", data={"attribute": "colour", "item_id": "test-00001", "top_k": "2"})
        print(added.status_code, added.json()["error"], deleted.status_code, search.status_code,
              len(search.json()["results"]))
        print(added.json()["detail"])
""")


def _how_to_deny_writes() -> str:
    """How this machine can make a directory unwritable for the service, for real: plain
    permissions when not root; as root, a read-only bind mount in a private mount namespace where
    allowed, else the service drops to `nobody` (after importing everything: the interpreter's
    own files may be unreadable to nobody)."""
    if os.geteuid() != 0:
        return "user"
    return "mount" if read_only_mounts_allowed() else "nobody"


def test_unwritable_index_directory_refuses_writes_and_serves_searches(
    tiny_checkpoint: Path, built_index: Path, demo_dataset: Path, n_items: int
) -> None:
    """The index directory cannot be written by the service (real permissions, or a read-only
    mount: see `_how_to_deny_writes`)."""
    shared = Path(tempfile.mkdtemp(prefix="asen-ro-"))
    try:
        os.chmod(shared, 0o755)
        index = Path(shutil.copytree(built_index, shared / "index"))
        checkpoint = Path(shutil.copy(tiny_checkpoint, shared / "model.pt"))
        for path in [index, *index.rglob("*")]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
        before = sorted(p.name for p in index.iterdir())
        how = _how_to_deny_writes()
        command = [
            sys.executable,
            "-c",
            UNWRITABLE,
            str(checkpoint),
            str(index),
            str(demo_dataset / "images" / "train" / "00003.jpg"),
            how,
        ]
        if how == "mount":
            folder = shlex.quote(str(index))
            script = (
                f"set -e\nmount --make-rprivate /\nmount --bind {folder} {folder}\n"
                f"mount -o remount,bind,ro {folder}\nexec {shlex.join(command)}"
            )
            command = ["unshare", "-m", "sh", "-c", script]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
        assert result.returncode == 0, result.stderr
        codes, detail = result.stdout.splitlines()[-2:]
        assert codes.split() == ["503", "storage_unavailable", "503", "200", "2"], result.stdout
        reason = "Read-only file system" if how == "mount" else "Permission denied"
        assert "cannot be written" in detail and reason in detail, detail
        assert sorted(p.name for p in index.iterdir()) == before
        os.chmod(index, 0o755)
        loaded = FaissCatalogue.load(index)
        assert len(loaded) == n_items and "nope" not in loaded
    finally:
        for path in shared.rglob("*"):
            if path.is_dir():
                os.chmod(path, 0o755)
        shutil.rmtree(shared)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import asen_search.index.store as store
    from asen_search.index import FaissCatalogue

    where, directory = sys.argv[1], sys.argv[2]
    catalogue = FaissCatalogue.load(directory)
    vectors = np.stack([catalogue.vector("test-00000", a) for a in catalogue.attributes])[None]
    catalogue.add(["doomed"], vectors, [{}])
    if where == "files":          # killed while writing the new version's files
        real = store._write_text
        def write_then_die(path, text):
            real(path, text)
            if path.name == "metadata.jsonl":
                os.kill(os.getpid(), signal.SIGKILL)
        store._write_text = write_then_die
    else:                         # killed after the version is complete, before CURRENT moves
        def die(src, dst):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
    catalogue.save(directory)
""")


@pytest.mark.parametrize("where", ["files", "pointer"])
def test_killed_writer_leaves_previous_index(index_dir: Path, n_items: int, where: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KILLER, where, str(index_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    _assert_complete(index_dir, n_items, "doomed")
    catalogue = FaissCatalogue.load(index_dir)  # and it is still writable afterwards
    catalogue.add(
        ["after"], np.stack([catalogue.vector("test-00001", a) for a in catalogue.attributes])[None]
    )
    catalogue.save(index_dir)
    assert "after" in FaissCatalogue.load(index_dir)


def test_writes_survive_a_restart(settings: Settings, demo_dataset: Path) -> None:
    with TestClient(create_app(settings)) as client:
        assert (
            client.post(
                "/items", data={"id": "kept", "metadata": '{"a": 1}'}, files=_picture(demo_dataset, 5)
            ).status_code
            == 201
        )
        assert client.delete("/items/test-00009").status_code == 200
    with TestClient(create_app(settings)) as client:
        assert client.get("/items/kept").json()["metadata"] == {"a": 1}
        assert client.get("/items/test-00009").status_code == 404
        for attribute in ("colour", "neckline"):
            hits = client.post(
                "/search",
                data={"attribute": attribute, "top_k": "100"},
                files={
                    "image": (
                        "q.jpg",
                        image_bytes(demo_dataset / "images" / "test" / "00009.jpg"),
                        "image/jpeg",
                    )
                },
            ).json()["results"]
            assert "test-00009" not in {h["id"] for h in hits}


def test_readyz_and_metrics_report_the_log_and_compactions(
    client: TestClient, demo_dataset: Path, settings: Settings
) -> None:
    assert client.get("/readyz").json()["log_bytes"] == 0
    assert client.post("/items", data={"id": "logged"}, files=_picture(demo_dataset)).status_code == 201
    ready = client.get("/readyz").json()
    assert ready["log_bytes"] > 0 and ready["writes_refused"] is None
    assert f"asen_wal_bytes {float(ready['log_bytes'])}" in client.get("/metrics").text
    assert client.app.state.service_state.compactor.compact_now()  # type: ignore[attr-defined]
    assert client.get("/readyz").json()["log_bytes"] == 0
    metrics = client.get("/metrics").text
    assert 'asen_compactions_total{result="ok"} 1.0' in metrics and "asen_wal_bytes 0.0" in metrics
    assert (settings.index / "CURRENT").read_text().strip() == "v000002"


def test_compaction_deletes_images_no_item_names(
    client: TestClient, demo_dataset: Path, settings: Settings
) -> None:
    key = "_image"
    state = client.app.state.service_state  # type: ignore[attr-defined]
    assert client.post("/items", data={"id": "a"}, files=_picture(demo_dataset, 1)).status_code == 201
    assert client.post("/items", data={"id": "b"}, files=_picture(demo_dataset, 2)).status_code == 201
    assert client.post("/items", data={"id": "c"}, files=_picture(demo_dataset, 3)).status_code == 201
    names = {i: state.catalogue.get(i).metadata[key] for i in "abc"}
    assert client.delete("/items/a").status_code == 200
    assert (
        client.post(
            "/items", data={"id": "b", "replace": "true"}, files=_picture(demo_dataset, 4)
        ).status_code
        == 200
    )
    state.compactor.compact_now()  # within the grace period: an upload may still be in flight
    assert all((settings.index / name).is_file() for name in names.values())
    state.compactor.upload_grace_s = 0
    assert client.post("/items", data={"id": "d"}, files=_picture(demo_dataset, 5)).status_code == 201
    state.compactor.compact_now()
    assert not (settings.index / names["a"]).exists() and not (settings.index / names["b"]).exists()
    for item in "bcd":
        assert client.get(f"/images/{item}").status_code == 200


def test_an_image_pruned_while_its_item_is_written_is_stored_again(
    client: TestClient, demo_dataset: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a compaction's pruning with a new upload of the same bytes: the pruning checked
    the (old, unreferenced) file, the upload refreshed it outside the write lock, and the pruning
    deleted it. Here the deletion is made to land right there; the write must store the image again
    under the write lock (where pruning runs), so the acknowledged item has its image."""
    import asen_search.service.operations.items as routes_items

    real = routes_items.save_upload
    calls: list[str] = []

    def racing_prune(index_dir: Path, data: bytes) -> str:
        name = real(index_dir, data)
        calls.append(name)
        if len(calls) == 1:  # the unlocked store: a pruning that checked the file before deletes it now
            (index_dir / name).unlink()
        return name

    monkeypatch.setattr(routes_items, "save_upload", racing_prune)
    assert client.post("/items", data={"id": "raced"}, files=_picture(demo_dataset, 6)).status_code == 201
    assert len(calls) >= 2 and (settings.index / calls[0]).is_file()
    assert client.get("/images/raced").status_code == 200
