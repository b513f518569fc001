"""Where catalogue listings and images live: a local path, or a URL that an fsspec filesystem reads
(`s3://bucket/shop/`, `gs://...`, `az://...`, `https://...`, `file:///...`).

fsspec ships the local, memory and HTTP filesystems; object stores need their driver installed
(`pip install s3fs`, `gcsfs`, `adlfs`). Credentials and endpoints come from the driver's usual
sources (for S3: `AWS_*` variables or `~/.aws`), or from fsspec's `FSSPEC_<PROTOCOL>_<OPTION>`
variables (for an S3-compatible store: `FSSPEC_S3_ENDPOINT_URL=http://minio:9000`).

A reference is a `Path` (local) or a `str` holding a URL; `as_ref` turns text back into one.

What a catalogue listing may name is decided here, by one function, `check_listed` (docs/service.md,
"What a listing may name").
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import socket
import string
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

ImageRef = Path | str


def is_url(ref: object) -> bool:
    """A `scheme://...` reference (a single letter before `:` is a Windows drive, not a scheme)."""
    if not isinstance(ref, str):
        return False
    scheme, sep, _ = ref.partition("://")
    return (
        bool(sep) and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").replace(".", "").isalnum()
    )


def as_ref(text: str | Path) -> ImageRef:
    """A URL stays text; anything else is a local path."""
    return text if is_url(text) else Path(text)


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for `url` and the path inside it. A missing driver is a clear error
    that names what to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        scheme = url.partition("://")[0]
        raise RuntimeError(
            f"cannot read {scheme}:// locations: {exc} (install fsspec's driver for it, e.g. "
            "`pip install s3fs` for s3://, or copy the files to a local folder)"
        ) from None


def read_bytes(ref: ImageRef) -> bytes:
    """The file's bytes. Any failure of a remote filesystem is an `OSError` (as a local one is),
    so that callers count the image as unreadable instead of stopping."""
    if not is_url(ref):
        return Path(ref).read_bytes()
    assert isinstance(ref, str)
    fs, path = filesystem(ref)
    try:
        data = fs.cat_file(path)
    except OSError:
        raise
    except Exception as exc:  # drivers raise their own errors (botocore, aiohttp): one kind for callers
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    return bytes(data)


def read_text(ref: ImageRef) -> str:
    return read_bytes(ref).decode("utf-8")


def absolute(ref: ImageRef) -> ImageRef:
    """What an index records for an image: the absolute local path, or the URL as it is."""
    return ref if is_url(ref) else Path(ref).resolve()


def parent(ref: ImageRef) -> ImageRef:
    """The folder a listing is in (relative image paths in it are relative to that)."""
    if is_url(ref):
        assert isinstance(ref, str)
        scheme, _, rest = ref.partition("://")
        return f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}"
    return Path(ref).parent


def join(base: ImageRef, relative: str) -> ImageRef:
    """`relative` (a listing's path column) against the listing's folder: a URL or an absolute path
    is taken as it is; under a URL folder, `..` is resolved as a path, never past the bucket."""
    if is_url(relative):
        return relative
    if not is_url(base):
        return Path(base) / relative
    assert isinstance(base, str)
    scheme, _, rest = base.partition("://")
    root, _, folder = rest.partition("/")
    if relative.startswith("/"):
        return f"{scheme}://{root}{posixpath.normpath(relative)}"
    joined = posixpath.normpath(posixpath.join("/" + folder, relative))
    return f"{scheme}://{root}{joined}"


def ukey(ref: ImageRef) -> str:
    """A key that changes when the file does (size and change time locally; the store's own key,
    such as S3's ETag, remotely). FileNotFoundError when it is gone."""
    if not is_url(ref):
        stat = Path(ref).stat()
        return f"{ref}\0{stat.st_size}\0{stat.st_mtime_ns}"
    assert isinstance(ref, str)
    fs, path = filesystem(ref)
    return f"{ref}\0{fs.ukey(path)}"


# What a catalogue listing (a JSONL/CSV file, a scan's .txt of designs) may name. A listing can come
# from a less trusted party than the person running the build; without these rules it could make the
# build read any file the process can (`file:///etc/passwd`), another bucket, or a cloud metadata
# endpoint (`http://169.254.169.254/...`: credentials), and record what it read in the index.

LOCAL_SCHEMES = frozenset({"file", "local"})  # fsspec's names for the local filesystem
# Schemes whose URL's netloc is a bucket or container name, never a network host (a bucket may be
# called "metadata"; none may be called like an IPv4 address).
BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "oss", "memory"})
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal"})
# Cloud metadata endpoints outside the link-local ranges: AWS's IPv6 one, Alibaba Cloud's.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# IPv6 addresses that carry an IPv4 address in their last 32 bits (mapped, compatible, NAT64).
_EMBEDS_IPV4 = (
    ipaddress.ip_network("::ffff:0:0/96"),
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("64:ff9b::/96"),
)
_NETLOC_CHARS = frozenset(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@[]")
ALLOW_HINT = "pass --allow-any-url to allow it"
NEVER = "never allowed, not even with --allow-any-url"


class ListingRefused(ValueError):
    """A catalogue listing names an image it may not (`check_listed`)."""


def check_listed(listing: ImageRef, ref: ImageRef, where: str, allow_any_url: bool = False) -> None:
    """Refuse `ref`, an image named by the catalogue listing at `listing` (`where` says which line
    and item, for the message), unless it stays where the listing is:

    - a local listing (a path, or a `file://` URL): under the listing's own folder (relative paths
      resolved against it, absolute ones inside it);
    - a remote listing (any other URL): the listing's own scheme and bucket/host.

    `allow_any_url` lifts that rule, never these two: a local file (a `file://` URL) named by a remote
    listing, and a link-local or cloud metadata host (169.254.0.0/16, fe80::/10, `metadata`,
    `metadata.google.internal`, also as an integer, hexadecimal or IPv4-in-IPv6 address)."""
    remote = _is_remote(listing)
    if not is_url(ref):  # a remote listing's paths are joined onto its URL: a Path here is a caller's mistake
        if remote:
            raise ListingRefused(
                f"{where}: {ref} is refused: a listing at a URL may never name a local file ({NEVER})"
            )
    else:
        assert isinstance(ref, str)
        problem = _never_allowed(ref, remote)
        if problem is not None:
            raise ListingRefused(f"{where}: {ref} is refused: {problem} ({NEVER})")
    if allow_any_url:
        return
    if remote:
        assert isinstance(listing, str) and isinstance(ref, str)
        if not _same_store(listing, ref):
            home = urlsplit(listing)
            raise ListingRefused(
                f"{where}: {ref} is refused: a listing at a URL may only name images in its own "
                f"scheme and bucket/host ({home.scheme}://{home.netloc}/); {ALLOW_HINT}"
            )
        return
    folder = os.path.dirname(os.path.abspath(_local_path(listing) or ""))
    target = _local_path(ref)
    if target is None or not _inside(folder, target):
        raise ListingRefused(
            f"{where}: {ref} is refused: a local listing may only name images under its own "
            f"folder ({folder}), by relative paths or absolute ones inside it; {ALLOW_HINT}"
        )


def _scheme(ref: str) -> str:
    return ref.partition(":")[0].lower()


def _is_remote(ref: ImageRef) -> bool:
    return is_url(ref) and _scheme(str(ref)) not in LOCAL_SCHEMES


def _local_path(ref: ImageRef) -> str | None:
    """The local file that `ref` reads (a `file://` URL as fsspec resolves it), or None when it is not
    local; as written (`..` kept: `_inside` needs to see it)."""
    if not is_url(ref):
        return str(ref)
    assert isinstance(ref, str)
    if "::" in ref or _scheme(ref) not in LOCAL_SCHEMES:
        return None
    return str(filesystem(ref)[1])


def _inside(folder: str, target: str) -> bool:
    """`target` is `folder` or under it, by the path (abspath resolves `..` as text); a path that
    climbs (`..`) is also checked where the filesystem takes it, since `link/..` leaves through a
    symbolic link."""
    folder = os.path.abspath(folder)
    if os.path.commonpath([folder, os.path.abspath(target)]) != folder:
        return False
    if ".." in Path(target).parts:
        real = os.path.realpath(folder)
        return os.path.commonpath([real, os.path.realpath(target)]) == real
    return True


def _same_store(listing: str, ref: str) -> bool:
    """The same scheme and bucket/host (netloc). A chained fsspec URL (`a::b`) never is: its parts
    decide together what is read."""
    if "::" in ref:
        return False
    home, there = urlsplit(listing), urlsplit(ref)
    if home.scheme != there.scheme:
        return False
    if home.scheme in BUCKET_SCHEMES:
        return home.netloc == there.netloc
    return home.netloc.lower() == there.netloc.lower()


def _never_allowed(ref: str, remote: bool) -> str | None:
    """Why `ref` may never be read from a listing (whatever --allow-any-url says), or None. Each part
    of a chained fsspec URL (`simplecache::s3://...`) is checked as well as the whole."""
    parts = [ref, *ref.split("::")] if "::" in ref else [ref]
    for part in parts:
        scheme = _scheme(part) if ":" in part else ""
        if remote and scheme in LOCAL_SCHEMES:
            return "a listing at a URL may never name a local file"
        if "://" not in part or scheme in LOCAL_SCHEMES:
            continue
        try:
            split = urlsplit(part)
            host = split.hostname
        except ValueError:
            chain = "" if part == ref else f"fsspec reads '::' as a chain of URLs, and {part!r}"
            return f"its host cannot be checked ({chain or 'it'} is not a valid URL)"
        if any(c not in _NETLOC_CHARS for c in split.netloc):
            return (
                f"its host cannot be checked (the address {split.netloc!r} holds characters a host may not)"
            )
        problem = _metadata_host(unquote(host or "").rstrip(".").lower(), scheme)
        if problem is not None:
            return problem
    return None


def _metadata_host(host: str, scheme: str) -> str | None:
    if scheme not in BUCKET_SCHEMES and host in METADATA_HOSTS:
        return f"{host} is a cloud metadata host"
    address = _address(host, loose=scheme not in BUCKET_SCHEMES)
    if address is None:
        return None
    if (
        isinstance(address, ipaddress.IPv6Address)
        and any(address in net for net in _EMBEDS_IPV4)
        and not address.is_loopback
        and not address.is_unspecified
    ):
        address = ipaddress.IPv4Address(address.packed[12:])
    if address.is_link_local or address in METADATA_ADDRESSES:
        shown = host if host == str(address) else f"{host}, that is {address}"
        return f"{shown} is a link-local or cloud metadata address"
    return None


def _address(host: str, loose: bool) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address `host` is, if it is one: also the forms a resolver accepts (`2852039166`,
    `0xa9fea9fe`, `0251.0376.0251.0376`, `169.254.43518`) when `loose`; an IPv6 zone (`%eth0`) is dropped."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    if not loose:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None
