"""Catalogues whose listing and images are URLs (fsspec): a folder or a JSONL/CSV listing at a URL,
relative paths resolved against the listing's URL, images read through the filesystem, the URL recorded
and served back by `GET /images/{id}` and used by `POST /explain`. fsspec's in-process `memory://`
filesystem stands for an object store (the code path is the one s3fs takes: `url_to_fs`, `cat_file`,
`find`, `ukey`); `file://` URLs carry it across processes in the Ray test (tests/service/jobs/test_ray_encode.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from fastapi.testclient import TestClient

from asen_search.index import FaissCatalogue
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from asen_search.service.jobs.build import BuildConfig, build_index
from asen_search.service.jobs.item_images import IMAGE_KEY
from asen_search.service.jobs.locations import is_url, join, parent, read_bytes
from asen_search.service.jobs.sources import read_catalogue


@pytest.fixture
def bucket(demo_dataset: Path) -> Iterator[str]:
    """`memory://<unique>/`: five demo images in two folders, a broken image, a text file, a hidden file."""
    fs = fsspec.filesystem("memory")
    root = f"/{uuid.uuid4().hex}"
    for i in range(5):
        fs.pipe_file(
            f"{root}/shop/{'tops/' if i % 2 else ''}item{i}.jpg",
            (demo_dataset / "images" / "test" / f"{i:05d}.jpg").read_bytes(),
        )
    fs.pipe_file(f"{root}/shop/broken.jpg", b"not an image")
    fs.pipe_file(f"{root}/shop/notes.txt", b"not part of the catalogue")
    fs.pipe_file(f"{root}/shop/.hidden.jpg", b"ignored")
    yield f"memory://{root.lstrip('/')}"
    fs.rm(root, recursive=True)


def test_url_helpers() -> None:
    assert (
        is_url("s3://bucket/a.jpg")
        and is_url("file:///tmp/a")
        and not is_url("C://x")
        and not is_url("a/b.jpg")
    )
    assert not is_url(Path("s3:/bucket"))
    assert parent("s3://bucket/shop/listing.jsonl") == "s3://bucket/shop"
    assert join("s3://bucket/shop", "img/a.jpg") == "s3://bucket/shop/img/a.jpg"
    assert join("s3://bucket/shop/sub", "../img/a.jpg") == "s3://bucket/shop/img/a.jpg"
    assert (
        join("s3://bucket/shop", "../../../etc/a.jpg") == "s3://bucket/etc/a.jpg"
    )  # never out of the bucket
    assert join("s3://bucket/shop", "/img/a.jpg") == "s3://bucket/img/a.jpg"
    assert join("s3://bucket/shop", "gs://other/a.jpg") == "gs://other/a.jpg"
    assert join(Path("/data/shop"), "img/a.jpg") == Path("/data/shop/img/a.jpg")
    assert join("file:///data/shop", "a.jpg") == "file:///data/shop/a.jpg"


def test_a_folder_url_lists_its_images(bucket: str) -> None:
    entries = read_catalogue(f"{bucket}/shop/")
    assert [e.id for e in entries] == ["broken", "item0", "item2", "item4", "tops/item1", "tops/item3"]
    assert entries[1].path == f"{bucket}/shop/item0.jpg"


def test_listings_at_a_url_resolve_their_paths_against_it(bucket: str, demo_dataset: Path) -> None:
    fs = fsspec.filesystem("memory")
    local = demo_dataset / "images" / "test" / "00007.jpg"
    fs.pipe_file(
        f"{bucket}/lists/catalogue.jsonl",
        (
            '{"id": "a", "path": "../shop/item0.jpg", "brand": "acme"}\n\n'
            f'{{"id": "b", "path": "{bucket}/shop/tops/item1.jpg", "metadata": {{"tags": ["x"]}}}}\n'
            '{"id": "c", "path": "/shop/item2.jpg"}\n'
        ).encode(),
    )  # absolute: from the bucket's root
    entries = read_catalogue(f"{bucket}/lists/catalogue.jsonl")
    assert [(e.id, e.path, e.metadata) for e in entries] == [
        ("a", f"{bucket}/shop/item0.jpg", {"brand": "acme"}),
        ("b", f"{bucket}/shop/tops/item1.jpg", {"tags": ["x"]}),
        ("c", f"{bucket}/shop/item2.jpg", {}),
    ]
    fs.pipe_file(
        f"{bucket}/lists/catalogue.csv",
        f"id,path,colour\nd,../shop/item4.jpg,red\ne,{local.as_uri()},\n".encode(),
    )
    # a listing at a URL may name another bucket with --allow-any-url, never a local file (test_listing_rules.py)
    with pytest.raises(
        ValueError,
        match=f"catalogue.csv line 3 \\(item 'e'\\): {local.as_uri()} is refused: a "
        "listing at a URL may never name a local file",
    ):
        read_catalogue(f"{bucket}/lists/catalogue.csv", allow_any_url=True)
    other = f"memory://{uuid.uuid4().hex}"
    fs.pipe_file(f"{other}/item7.jpg", local.read_bytes())
    fs.pipe_file(
        f"{bucket}/lists/catalogue.csv",
        f"id,path,colour\nd,../shop/item4.jpg,red\ne,{other}/item7.jpg,\n".encode(),
    )
    entries = read_catalogue(f"{bucket}/lists/catalogue.csv", allow_any_url=True)
    assert [(e.id, e.path, e.metadata) for e in entries] == [
        ("d", f"{bucket}/shop/item4.jpg", {"colour": "red"}),
        ("e", f"{other}/item7.jpg", {}),
    ]
    assert read_bytes(entries[1].path) == local.read_bytes()
    fs.rm(f"/{other.split('://')[1]}", recursive=True)


def test_bad_url_sources_fail_clearly(
    bucket: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_catalogue(f"{bucket}/nothing.jsonl")
    with pytest.raises(ValueError, match="expected a folder of images"):
        read_catalogue(f"{bucket}/shop/notes.txt")
    fsspec.filesystem("memory").pipe_file(f"{bucket}/bad.jsonl", b'{"id": "x", "path": "a.jpg"}\n[1]\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2: expected a JSON object"):
        read_catalogue(f"{bucket}/bad.jsonl")
    with pytest.raises(RuntimeError, match="cannot read nosuchfs:// locations.*pip install s3fs"):
        read_catalogue("nosuchfs://bucket/listing.jsonl")
    # the same through the command: a clear message and exit status 2, no traceback
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--catalogue",
                "nosuchfs://b/x.jsonl",
                "--out",
                str(tmp_path / "ix"),
            ]
        )
        == 2
    )
    assert "cannot read nosuchfs:// locations" in capsys.readouterr().err
    with pytest.raises(OSError):
        read_bytes(f"{bucket}/shop/missing.jpg")


def test_a_url_catalogue_builds_serves_its_images_and_explains(
    bucket: str, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "index"
    report = build_index(
        BuildConfig(tiny_checkpoint, f"{bucket}/shop", out, batch_size=2, chunk_size=3, progress=False)
    )
    assert report.items == 5 and [s[0] for s in report.skipped] == ["broken"]
    catalogue = FaissCatalogue.load(out)
    assert catalogue.get("tops/item3").metadata[IMAGE_KEY] == f"{bucket}/shop/tops/item3.jpg"
    # the same images from local files give the same vectors
    local = tmp_path / "local"
    for entry in read_catalogue(f"{bucket}/shop"):
        (local / f"{entry.id}.jpg").parent.mkdir(parents=True, exist_ok=True)
        (local / f"{entry.id}.jpg").write_bytes(read_bytes(entry.path))
    build_index(BuildConfig(tiny_checkpoint, local, tmp_path / "local-index", batch_size=2, progress=False))
    reference = FaissCatalogue.load(tmp_path / "local-index")
    for attribute in catalogue.attributes:
        np.testing.assert_allclose(
            catalogue.vector("tops/item3", attribute), reference.vector("tops/item3", attribute), atol=1e-5
        )
    with TestClient(create_app(Settings(checkpoint=tiny_checkpoint, index=out))) as client:
        served = client.get("/images/tops/item3")
        assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
        assert served.content == read_bytes(f"{bucket}/shop/tops/item3.jpg")
        assert (
            client.get("/images/tops/item3", headers={"If-None-Match": served.headers["etag"]}).status_code
            == 304
        )
        thumb = client.get("/images/tops/item3", params={"size": 16})
        assert thumb.status_code == 200 and thumb.headers["etag"] != served.headers["etag"]
        attribute = catalogue.attributes[0]
        explained = client.post("/explain", data={"attribute": attribute, "item_id": "tops/item3"})
        assert explained.status_code == 200, explained.text
        fsspec.filesystem("memory").rm(f"/{bucket.split('://')[1]}/shop/item0.jpg")
        gone = client.get("/images/item0")
        assert gone.status_code == 404 and gone.json()["error"] == "no_image", gone.text
