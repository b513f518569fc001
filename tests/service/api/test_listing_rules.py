"""What a catalogue listing may name (service/jobs/locations.py `check_listed`; docs/service.md "What a
listing may name"): a local listing only images under its own folder, a listing at a URL only images in its own
scheme and bucket/host, unless `--allow-any-url`; never, whatever the flag, a local file named by a listing at a
URL, nor a link-local or cloud metadata address. Refusals come before any image is read, name the listing, the
line, the item, the URL and the rule, and say how to allow what may be allowed. fsspec's in-process `memory://`
filesystem stands for a bucket (as in test_remote_sources.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from asen_search.service.cli.main import main
from asen_search.service.jobs import build as build_module
from asen_search.service.jobs import ray_encode, scan_work
from asen_search.service.jobs.locations import ListingRefused, check_listed
from asen_search.service.jobs.scan import read_designs
from asen_search.service.jobs.sources import CatalogueEntry, read_catalogue

NEVER = "not even with --allow-any-url"
HINT = "pass --allow-any-url to allow it"

# Always refused: link-local (169.254.0.0/16, fe80::/10) and cloud metadata hosts, in every spelling a resolver takes;
# with the reason the message gives.
ADDRESS, HOST, UNCHECKABLE = (
    "is a link-local or cloud metadata address",
    "is a cloud metadata host",
    "cannot be checked",
)
METADATA_URLS = [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", ADDRESS),
    ("https://169.254.1.1/a.jpg", ADDRESS),
    ("http://169.254.169.254./a.jpg", ADDRESS),  # a trailing dot
    ("http://user@169.254.169.254:80/a.jpg", ADDRESS),  # credentials and a port around it
    ("http://2852039166/latest/meta-data/", ADDRESS),  # 169.254.169.254 as one integer
    ("http://0xa9fea9fe/latest/meta-data/", ADDRESS),  # ... in hexadecimal
    ("http://0251.0376.0251.0376/latest/meta-data/", ADDRESS),  # ... in octal
    ("http://169.254.43518/latest/meta-data/", ADDRESS),  # ... with a 16-bit last part
    ("http://%31%36%39.254.169.254/a.jpg", ADDRESS),  # percent-encoded
    ("http://100.100.100.200/latest/meta-data/", ADDRESS),  # Alibaba Cloud's metadata endpoint
    ("http://[fe80::1]/a.jpg", ADDRESS),
    ("http://[fe80::a9fe:a9fe%25eth0]/a.jpg", ADDRESS),  # with a zone
    ("http://[febf:ffff:0:0:0:0:0:1]/a.jpg", ADDRESS),  # the end of fe80::/10
    ("http://[0:0:0:0:0:ffff:a9fe:a9fe]/a.jpg", ADDRESS),  # IPv4-mapped
    ("http://[64:ff9b:0:0:0:0:a9fe:a9fe]/a.jpg", ADDRESS),  # NAT64
    ("http://[fd00:ec2:0:0:0:0:0:254]/latest/meta-data/", ADDRESS),  # AWS's IPv6 metadata endpoint
    ("http://metadata.google.internal/computeMetadata/v1/", HOST),
    ("http://METADATA.Google.Internal./computeMetadata/v1/", HOST),
    ("http://metadata/computeMetadata/v1/", HOST),
    ("ftp://169.254.169.254/a.jpg", ADDRESS),  # any scheme with a host
    (
        "http://169.254.169.254\\@example.com/a.jpg",
        UNCHECKABLE,
    ),  # a host a URL parser and a client may read apart
    ("http://[::ffff:169.254.169.254]/a.jpg", ADDRESS),  # the whole URL is checked, then each '::' part
    ("http://[2001:db8::1]/a.jpg", UNCHECKABLE),  # '::' is a chain of URLs to fsspec: unreadable
    ("http://[fe80/a.jpg", UNCHECKABLE),
]
# Near misses, allowed with --allow-any-url: the checks are not "anything that looks odd".
NOT_METADATA_URLS = [
    "http://169.255.0.1/a.jpg",
    "http://169.253.255.255/a.jpg",
    "http://[fec0:0:0:0:0:0:0:1]/a.jpg",
    "http://metadata.example.com/a.jpg",
    "http://images.example.com/metadata/a.jpg",
    "http://[2001:db8:0:0:0:0:0:1]/a.jpg",
    "s3://metadata/a.jpg",
]  # a bucket may be called metadata


@pytest.fixture
def bucket() -> Iterator[str]:
    """`memory://<unique>`: the listing's bucket."""
    root = uuid.uuid4().hex
    yield f"memory://{root}"
    if fsspec.filesystem("memory").exists(f"/{root}"):
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)


def _remote_listing(bucket: str, *paths: str, name: str = "lists/catalogue.jsonl") -> str:
    url = f"{bucket}/{name}"
    fsspec.filesystem("memory").pipe_file(url, _jsonl(paths).encode())
    return url


def _local_listing(folder: Path, *paths: str | Path, name: str = "catalogue.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / name
    listing.write_text(_jsonl(paths))
    return listing


def _jsonl(paths: tuple[str | Path, ...]) -> str:
    return "".join(json.dumps({"id": f"i{n}", "path": str(p)}) + "\n" for n, p in enumerate(paths))


# --- a listing at a URL ------------------------------------------------------------------------


def test_a_remote_listing_may_name_its_own_bucket(bucket: str) -> None:
    listing = _remote_listing(
        bucket,
        "a.jpg",
        "sub/b.jpg",
        "../shop/c.jpg",
        "/shop/d.jpg",
        f"{bucket}/shop/e.jpg",
        "../../../../etc/passwd",
        "/etc/passwd",
    )
    assert [e.path for e in read_catalogue(listing)] == [
        f"{bucket}/lists/a.jpg",
        f"{bucket}/lists/sub/b.jpg",
        f"{bucket}/shop/c.jpg",
        f"{bucket}/shop/d.jpg",
        f"{bucket}/shop/e.jpg",
        f"{bucket}/etc/passwd",
        f"{bucket}/etc/passwd",
    ]  # paths never leave the bucket


@pytest.mark.parametrize(
    "other",
    [
        "memory://another-bucket/a.jpg",
        "s3://{root}/a.jpg",
        "gs://{root}/a.jpg",
        "{bucket}/a.jpg::memory://another-bucket/b.jpg",
    ],
)
def test_a_remote_listing_may_not_name_another_bucket_or_scheme_unless_allowed(
    bucket: str, other: str
) -> None:
    url = other.format(bucket=bucket, root=bucket.split("://")[1])
    listing = _remote_listing(bucket, "a.jpg", url)
    with pytest.raises(ListingRefused) as refused:
        read_catalogue(listing)
    message = str(refused.value)
    assert message.startswith(f"{listing} line 2 (item 'i1'): {url} is refused: ")
    assert f"in its own scheme and bucket/host ({bucket}/)" in message and message.endswith(HINT)
    assert [e.path for e in read_catalogue(listing, allow_any_url=True)] == [f"{bucket}/lists/a.jpg", url]


@pytest.mark.parametrize(
    "local",
    ["file:///etc/passwd", "FILE:///etc/passwd", "local:///etc/passwd", "{bucket}/a.jpg::file:///etc/passwd"],
)
@pytest.mark.parametrize("allow", [False, True])
def test_a_remote_listing_never_names_a_local_file(bucket: str, local: str, allow: bool) -> None:
    url = local.format(bucket=bucket)
    listing = _remote_listing(bucket, "a.jpg", url)
    with pytest.raises(ListingRefused, match="a listing at a URL may never name a local file") as refused:
        read_catalogue(listing, allow_any_url=allow)
    assert str(refused.value).startswith(f"{listing} line 2 (item 'i1'): {url} is refused: ")
    assert NEVER in str(refused.value) and HINT not in str(refused.value)


def test_a_remote_listing_never_names_a_bare_local_path() -> None:
    """Paths in a remote listing are joined onto its URL (above); a `Path` reaching the check is refused anyway."""
    for allow in (False, True):
        with pytest.raises(
            ListingRefused,
            match=f"/etc/passwd is refused: a listing at a URL may never name a local "
            f"file \\(never allowed, {NEVER}\\)",
        ):
            check_listed("s3://shop/catalogue.jsonl", Path("/etc/passwd"), "catalogue.jsonl line 1", allow)


def test_a_file_url_from_a_remote_listing_is_refused_before_it_is_read(bucket: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"private")
    listing = _remote_listing(bucket, secret.as_uri())
    with pytest.raises(ListingRefused, match=secret.as_uri()):
        read_catalogue(listing, allow_any_url=True)


# --- link-local and metadata addresses -----------------------------------------------------------


@pytest.mark.parametrize(("url", "reason"), METADATA_URLS)
def test_metadata_addresses_are_always_refused(url: str, reason: str, tmp_path: Path, bucket: str) -> None:
    local = _local_listing(tmp_path / "shop", "a.jpg", url)
    with pytest.raises(ListingRefused) as refused:
        read_catalogue(local, allow_any_url=True)
    assert str(refused.value).startswith(f"{local} line 2 (item 'i1'): {url} is refused: ")
    assert reason in str(refused.value) and NEVER in str(refused.value) and HINT not in str(refused.value)
    with pytest.raises(ListingRefused, match=NEVER):
        read_catalogue(_remote_listing(bucket, url), allow_any_url=True)
    # also from a listing on that very host (the same-host rule would let it through)
    home = url.split("/")[0] + "//" + url.split("/")[2] + "/catalogue.jsonl"
    with pytest.raises(ListingRefused, match=NEVER):
        check_listed(home, url, "catalogue.jsonl line 1")


@pytest.mark.parametrize("url", NOT_METADATA_URLS)
def test_near_misses_of_metadata_addresses_follow_the_ordinary_rule(url: str, tmp_path: Path) -> None:
    local = _local_listing(tmp_path / "shop", url)
    with pytest.raises(ListingRefused, match=HINT):
        read_catalogue(local)
    assert [e.path for e in read_catalogue(local, allow_any_url=True)] == [url]


# --- a local listing -----------------------------------------------------------------------------


def test_a_local_listing_may_name_its_own_folder(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    listing = _local_listing(
        shop, "a.jpg", "sub/b.jpg", "sub/../c.jpg", shop / "d.jpg", (shop / "sub" / "e.jpg").as_uri()
    )
    assert [e.path for e in read_catalogue(listing)] == [
        shop / "a.jpg",
        shop / "sub" / "b.jpg",
        shop / "sub/../c.jpg",
        shop / "d.jpg",
        (shop / "sub" / "e.jpg").as_uri(),
    ]
    csv_listing = shop / "catalogue.csv"
    csv_listing.write_text(f"id,path\na,a.jpg\nb,{shop / 'b.jpg'}\nc,{tmp_path / 'c.jpg'}\n")
    with pytest.raises(
        ListingRefused, match=f"^{csv_listing} line 4 \\(item 'c'\\): {tmp_path / 'c.jpg'} is refused"
    ):
        read_catalogue(csv_listing)


@pytest.mark.parametrize(
    "outside",
    [
        "../elsewhere/a.jpg",
        "sub/../../a.jpg",
        "/etc/passwd",
        "{tmp}/shop-other/a.jpg",
        "file:///etc/passwd",
        "s3://bucket/a.jpg",
        "https://images.example.com/a.jpg",
    ],
)
def test_a_local_listing_may_not_name_images_outside_its_folder_unless_allowed(
    tmp_path: Path, outside: str
) -> None:
    path = outside.format(tmp=tmp_path)
    listing = _local_listing(tmp_path / "shop", "a.jpg", path)
    with pytest.raises(ListingRefused) as refused:
        read_catalogue(listing)
    message = str(refused.value)
    assert message.startswith(f"{listing} line 2 (item 'i1'): ") and " is refused: " in message
    assert f"may only name images under its own folder ({tmp_path / 'shop'})" in message and message.endswith(
        HINT
    )
    assert len(read_catalogue(listing, allow_any_url=True)) == 2


def test_a_symbolic_link_does_not_lead_out_of_the_folder(tmp_path: Path) -> None:
    """`link/..` is the folder as text but the link target's parent on disk: what the build would read."""
    shop, deep = tmp_path / "shop", tmp_path / "other" / "deep"
    deep.mkdir(parents=True)
    (tmp_path / "other" / "secret.jpg").write_bytes(b"private")
    shop.mkdir()
    (shop / "link").symlink_to(deep, target_is_directory=True)
    assert len(read_catalogue(_local_listing(shop, "link/a.jpg"))) == 1  # a linked folder is part of it
    with pytest.raises(ListingRefused, match="link/../secret.jpg is refused"):
        read_catalogue(_local_listing(shop, "link/../secret.jpg"))


def test_a_file_url_listing_is_a_local_listing(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    inside = _local_listing(shop, "a.jpg", f"{(shop / 'b.jpg').as_uri()}")
    assert [e.path for e in read_catalogue(inside.as_uri())] == [
        (shop / "a.jpg").as_uri(),
        (shop / "b.jpg").as_uri(),
    ]
    outside = _local_listing(shop, "a.jpg", (tmp_path / "b.jpg").as_uri(), name="out.jsonl")
    with pytest.raises(
        ListingRefused,
        match=f"line 2 \\(item 'i1'\\): {(tmp_path / 'b.jpg').as_uri()} is refused: a "
        f"local listing may only name images under its own folder",
    ):
        read_catalogue(outside.as_uri())
    assert len(read_catalogue(outside.as_uri(), allow_any_url=True)) == 2


def test_one_error_names_the_first_refusal_and_counts_the_others(tmp_path: Path) -> None:
    listing = _local_listing(tmp_path / "shop", "a.jpg", "/etc/passwd", "/etc/shadow", "../x.jpg")
    with pytest.raises(
        ListingRefused,
        match=r"line 2 \(item 'i1'\): /etc/passwd .* \(2 more entries of the listing "
        r"are refused as well\)$",
    ):
        read_catalogue(listing)


def test_a_scan_design_list_follows_the_same_rule(tmp_path: Path) -> None:
    designs = tmp_path / "designs"
    designs.mkdir()
    (designs / "list.txt").write_text(
        f"# protected\na.jpg\nsub/b.jpg\n{designs / 'c.jpg'}\n\n{tmp_path / 'x.jpg'}\n"
    )
    with pytest.raises(
        ListingRefused,
        match=f"^{designs / 'list.txt'} line 6 \\(item 'x'\\): {tmp_path / 'x.jpg'} is refused: .*{HINT}$",
    ):
        read_designs(designs / "list.txt")
    assert [e.id for e in read_designs(designs / "list.txt", allow_any_url=True)] == ["a", "b", "c", "x"]
    _local_listing(designs, "a.jpg", "/etc/passwd", name="designs.jsonl")
    with pytest.raises(ListingRefused, match="designs.jsonl line 2"):
        read_designs(designs / "designs.jsonl")
    assert len(read_designs(designs / "designs.jsonl", allow_any_url=True)) == 2
    _local_listing(designs, "http://169.254.169.254/latest/meta-data/", name="meta.jsonl")
    with pytest.raises(ListingRefused, match=NEVER):
        read_designs(designs / "meta.jsonl", allow_any_url=True)


# --- through the command line --------------------------------------------------------------------


def _forbid_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The images the build reads from now on, each failing (a refusal must come before any)."""
    reads: list[object] = []

    def read_bytes(ref: object) -> bytes:
        reads.append(ref)
        raise OSError(f"an image was read: {ref}")

    monkeypatch.setattr(build_module, "read_bytes", read_bytes)
    return reads


def test_index_build_refuses_before_reading_anything(
    tmp_path: Path,
    tiny_checkpoint: Path,
    demo_dataset: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = demo_dataset / "images" / "test" / "00001.jpg"  # outside the listing's folder
    listing = _local_listing(tmp_path / "shop", "a.jpg", image)
    (tmp_path / "shop" / "a.jpg").write_bytes((demo_dataset / "images" / "test" / "00000.jpg").read_bytes())
    out = tmp_path / "index"
    reads = _forbid_reads(monkeypatch)
    command = [
        "index",
        "build",
        "--checkpoint",
        str(tiny_checkpoint),
        "--catalogue",
        str(listing),
        "--out",
        str(out),
    ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {listing} line 2 (item 'i1'): {image} is refused: a local listing may only name images under its "
        f"own folder ({tmp_path / 'shop'})"
        in err
        and HINT in err
    )
    assert not out.exists() and not reads
    # --allow-any-url: the same command builds, with the image from outside
    monkeypatch.undo()
    assert main([*command, "--allow-any-url"]) == 0
    assert json.loads((out / "build_report.json").read_text())["items"] == 2
    # never allowed: a metadata address, with the flag; still nothing written or read
    listing = _local_listing(
        tmp_path / "shop", "a.jpg", "http://169.254.169.254/latest/meta-data/", name="m.jsonl"
    )
    reads = _forbid_reads(monkeypatch)
    other = tmp_path / "index2"
    assert (
        main(
            [
                "index",
                "build",
                "--checkpoint",
                str(tiny_checkpoint),
                "--catalogue",
                str(listing),
                "--out",
                str(other),
                "--allow-any-url",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"{listing} line 2 (item 'i1'): http://169.254.169.254/latest/meta-data/ is refused: 169.254.169.254 is a "
        f"link-local or cloud metadata address (never allowed, {NEVER})" in err
    )
    assert not other.exists() and not reads


def test_encode_refuses_before_starting_anything(
    tmp_path: Path,
    tiny_checkpoint: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[list[str]] = []

    def encode_with_ray(
        cfg: ray_encode.EncodeConfig, entries: list[CatalogueEntry]
    ) -> ray_encode.EncodeReport:
        started.append([str(e.path) for e in entries])
        return ray_encode.EncodeReport(0, 0, [], 0.0)

    monkeypatch.setattr(ray_encode, "encode_with_ray", encode_with_ray)
    listing = _remote_listing(bucket, "a.jpg", "memory://another-bucket/b.jpg")
    out = tmp_path / "shards"
    command = ["encode", "--checkpoint", str(tiny_checkpoint), "--catalogue", listing, "--out", str(out)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"{listing} line 2 (item 'i1'): memory://another-bucket/b.jpg is refused" in err and HINT in err
    assert not started and not out.exists()
    assert main([*command, "--allow-any-url"]) == 0
    assert started == [[f"{bucket}/lists/a.jpg", "memory://another-bucket/b.jpg"]]
    _remote_listing(bucket, "a.jpg", "file:///etc/passwd")
    assert main([*command, "--allow-any-url"]) == 2
    assert (
        f"file:///etc/passwd is refused: a listing at a URL may never name a local file (never allowed, {NEVER})"
        in capsys.readouterr().err
    )
    assert len(started) == 1 and not out.exists()


def test_scan_refuses_before_reading_anything(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asen_search.model.encoder import Encoder

    attribute = Encoder.from_checkpoint(tiny_checkpoint, runtime="torch").attribute_names[0]

    def opened(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the catalogue was opened")

    monkeypatch.setattr(scan_work, "open_catalogue", opened)
    designs = tmp_path / "designs"
    designs.mkdir()
    (designs / "list.txt").write_text("a.jpg\n/etc/passwd\n")
    out = tmp_path / "report"
    command = [
        "scan",
        "--checkpoint",
        str(tiny_checkpoint),
        "--index",
        str(tmp_path / "index"),
        "--designs",
        str(designs / "list.txt"),
        "--attribute",
        attribute,
        "--min-score",
        "0.5",
        "--out",
        str(out),
        "--runtime",
        "torch",
    ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"{designs / 'list.txt'} line 2 (item 'passwd'): /etc/passwd is refused" in err and HINT in err
    assert not out.exists()
    assert main([*command, "--allow-any-url"]) == 2  # allowed: on to the catalogue
    assert "the catalogue was opened" in capsys.readouterr().err
