"""A checkpoint that mirror-averages its embeddings (`Preprocess.mirror_average`, the default recipe's
setting): the catalogue built by `asen index build` and the queries the service encodes must embed alike,
or a catalogue picture would no longer find itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import ImageOps

from asen_search.model.checkpoint import load_checkpoint, save_checkpoint
from asen_search.model.nn.preprocess import load_image
from asen_search.service.api.app import create_app
from asen_search.service.api.settings import Settings
from asen_search.service.cli.main import main
from tests.helpers.models import image_bytes, png_bytes


def test_a_mirror_averaging_catalogue_finds_its_pictures_and_their_mirrors(
    tmp_path: Path, tiny_checkpoint: Path, demo_dataset: Path
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    path = tmp_path / "mirror.pt"
    pre = dataclasses.replace(ckpt.preprocess, mirror_average="images")
    save_checkpoint(path, ckpt.model, pre, ckpt.attributes, ckpt.extra)
    index = tmp_path / "index"
    build = [
        "index",
        "build",
        "--checkpoint",
        str(path),
        "--catalogue",
        str(demo_dataset),
        "--out",
        str(index),
    ]
    assert main([*build, "--split", "test"]) == 0
    with TestClient(create_app(Settings(checkpoint=path, index=index))) as client:
        for fid in (3, 17, 41):
            picture = demo_dataset / "images" / "test" / f"{fid:05d}.jpg"
            mirrored = png_bytes(ImageOps.mirror(load_image(picture)))
            for name, payload in (("q.jpg", image_bytes(picture)), ("mirrored.png", mirrored)):
                response = client.post(
                    "/search", data={"attribute": "neckline", "top_k": "3"}, files={"image": (name, payload)}
                )
                assert response.status_code == 200, response.text
                best = response.json()["results"][0]
                # the catalogue and the query embed alike, and an image and its mirror alike
                assert best["id"] == f"test-{fid:05d}" and abs(best["score"] - 1.0) < 1e-4, (name, best)
