"""`asen index copy` carries the images uploaded through `POST /items` (`images/<sha256>.<ext>` under
the images folder) to the destination's images folder: an item added on a FAISS directory shows its
image once the catalogue is served from Milvus (Milvus Lite here) with `--images-dir`, and back again;
an upload that cannot be carried refuses the copy before anything is made at the destination."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from asen_search.service.jobs.carry_images import ImageCarrier, ImagesNotCarried, cleaned_up_on_failure
from tests.helpers.models import image_bytes

KEY = "_image"


def _upload(settings: Settings, item_id: str, data: bytes) -> str:
    """Add an item through the real app; returns the name it recorded for its image."""
    with TestClient(create_app(settings)) as client:
        added = client.post(
            "/items",
            data={"id": item_id, "metadata": '{"colour": "teal"}'},
            files={"image": ("n.jpg", data, "image/jpeg")},
        )
        assert added.status_code == 201, added.text
        name: str = client.app.state.service_state.catalogue.get(item_id).metadata["_image"]  # type: ignore[attr-defined]
    assert name.startswith("images/")
    return name


def _image_of(settings: Settings, item_id: str) -> tuple[int, bytes]:
    with TestClient(create_app(settings)) as client:
        answer = client.get(f"/images/{item_id}")
        assert client.get("/images/test-00001").status_code == 200  # a path the build recorded: kept
    return answer.status_code, answer.content


def _copy(*args: str) -> int:
    return main(["index", "copy", *args])


@pytest.fixture
def upload(demo_dataset: Path) -> bytes:
    return image_bytes(demo_dataset / "images" / "train" / "00007.jpg")


def test_uploads_travel_from_a_directory_to_milvus_and_back(
    tiny_checkpoint: Path, index_dir: Path, tmp_path: Path, upload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _upload(Settings(checkpoint=tiny_checkpoint, index=index_dir), "sku-1", upload)
    location, shared = f"milvus-lite:{tmp_path}/copy.db#shop", tmp_path / "shared-images"
    assert _copy("--from", str(index_dir), "--to", location, "--images-dir", str(shared)) == 0
    said = capsys.readouterr().out
    milvus = Settings(checkpoint=tiny_checkpoint, index=location, images_dir=shared)
    assert _image_of(milvus, "sku-1") == (200, upload)
    assert (shared / name).read_bytes() == upload  # the same content-addressed name
    assert "carried 1 uploaded images" in said

    back = tmp_path / "back"
    assert _copy("--from", location, "--to", str(back), "--source-images-dir", str(shared)) == 0
    said = capsys.readouterr().out
    assert _image_of(Settings(checkpoint=tiny_checkpoint, index=back), "sku-1") == (200, upload)
    assert (back / name).read_bytes() == upload and "carried 1 uploaded images" in said


def test_an_upload_made_on_milvus_travels_into_a_directory(
    tiny_checkpoint: Path, built_index: Path, tmp_path: Path, upload: bytes
) -> None:
    location, shared = f"milvus-lite:{tmp_path}/live.db#shop", tmp_path / "replica-images"
    assert _copy("--from", str(built_index), "--to", location) == 0  # no uploads yet: no --images-dir needed
    name = _upload(Settings(checkpoint=tiny_checkpoint, index=location, images_dir=shared), "sku-2", upload)
    out = tmp_path / "index"
    assert _copy("--from", location, "--to", str(out), "--source-images-dir", str(shared)) == 0
    assert (out / name).is_file()
    assert _image_of(Settings(checkpoint=tiny_checkpoint, index=out), "sku-2") == (200, upload)


def test_uploads_that_cannot_be_carried_refuse_the_copy_before_anything_is_made(
    tiny_checkpoint: Path, index_dir: Path, tmp_path: Path, upload: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    name = _upload(Settings(checkpoint=tiny_checkpoint, index=index_dir), "sku-3", upload)
    capsys.readouterr()
    # a Milvus destination without --images-dir
    db = tmp_path / "refused.db"
    assert _copy("--from", str(index_dir), "--to", f"milvus-lite:{db}#shop") == 2
    error = capsys.readouterr().err
    assert (
        "1 items" in error
        and "'sku-3'" in error
        and "--images-dir" in error
        and "--skip-missing-images" in error
    )
    assert not db.exists()
    # the file missing at the source
    (index_dir / name).unlink()
    out = tmp_path / "out"
    assert _copy("--from", str(index_dir), "--to", str(out)) == 2
    error = capsys.readouterr().err
    assert "1 items" in error and "'sku-3'" in error and name in error and "--source-images-dir" in error
    assert not out.exists()
    # unless asked to copy such items without their image (listed)
    assert _copy("--from", str(index_dir), "--to", str(out), "--skip-missing-images") == 0
    captured = capsys.readouterr()
    assert "carried 0 uploaded images" in captured.out and "sku-3" in captured.err
    with TestClient(create_app(Settings(checkpoint=tiny_checkpoint, index=out))) as client:
        assert client.get("/items/sku-3").status_code == 200
        missing = client.get("/images/sku-3")
        assert missing.status_code == 404 and missing.json()["error"] == "no_image", missing.text


def test_an_upload_met_during_the_copy_is_carried_or_stops_it_and_a_failed_copy_leaves_no_files(
    tmp_path: Path, upload: bytes
) -> None:
    """Items added to a served source after the check: carried when both folders are known, else the
    copy stops (or, with skip_missing, the item loses its image); a copy that fails removes its files."""
    name = f"images/{'a' * 64}.jpg"
    (tmp_path / "src" / "images").mkdir(parents=True)
    (tmp_path / "src" / name).write_bytes(upload)
    batch = (["x"], np.zeros((1, 1, 2), np.float32), [{KEY: name, "k": 1}])
    with pytest.raises(ImagesNotCarried, match="--skip-missing-images"):
        ImageCarrier(tmp_path / "src", None, frozenset(), {})(batch)
    assert ImageCarrier(tmp_path / "src", None, frozenset(), {}, skip_missing=True)(batch)[2] == [{"k": 1}]
    carrier = ImageCarrier(tmp_path / "src", tmp_path / "dst", frozenset(), {})
    with pytest.raises(RuntimeError), cleaned_up_on_failure(carrier):
        assert carrier(batch)[2] == [{KEY: name, "k": 1}] and (tmp_path / "dst" / name).read_bytes() == upload
        raise RuntimeError("the copy failed later")
    assert not (tmp_path / "dst" / "images").exists()
