"""Where a Milvus catalogue lives, and the client connection to it: a server (`milvus://HOST:PORT/
COLLECTION`) or a Milvus Lite file (`milvus-lite:PATH.db#COLLECTION`), with the options of every read
(consistency) and search (the index type's breadth)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..errors import CatalogueError

SCHEME, LITE_SCHEME = "milvus://", "milvus-lite:"
DEFAULT_COLLECTION = "catalogue"
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
# the search knobs, by the front's names (index/interface.py), and what Milvus calls them
SEARCH_PARAMS = {"ef_search": "ef", "nprobe": "nprobe", "search_list": "search_list"}


class MilvusUnavailable(CatalogueError, RuntimeError):
    """pymilvus is not installed, or the Milvus server cannot be reached."""


@dataclass(frozen=True)
class MilvusLocation:
    """Where a catalogue lives: a server URI (`http://host:port`) or a Milvus Lite file, the
    collection name, the consistency level of every read, and search knobs."""

    uri: str
    collection: str
    consistency: str = "Strong"
    search: tuple[tuple[str, int], ...] = ()  # the front's knob names: ef_search, nprobe, search_list

    @staticmethod
    def parse(text: str) -> MilvusLocation:
        """`milvus://HOST:PORT/COLLECTION` or `milvus-lite:PATH.db[#COLLECTION]`, either followed by
        options: `?consistency=Strong|Bounded|Session|Eventually` (default Strong: docs/scale.md) and
        the index type's search knobs, `ef_search=N` (HNSW), `nprobe=N` (IVF), `search_list=N`
        (DISKANN), joined by `&`."""
        text, _, query = text.partition("?")
        consistency, search = "Strong", []
        for option in filter(None, query.split("&")):
            key, _, value = option.partition("=")
            if key == "consistency" and value in CONSISTENCY_LEVELS:
                consistency = value
            elif key in SEARCH_PARAMS and value.isdigit() and int(value) > 0:
                search.append((key, int(value)))
            else:
                raise ValueError(
                    f"{option!r}: the options are consistency={'|'.join(CONSISTENCY_LEVELS)} and "
                    f"{', '.join(f'{k}=N' for k in SEARCH_PARAMS)} (N a positive integer)"
                )
        where = MilvusLocation._parse(text)
        return MilvusLocation(where.uri, where.collection, consistency, tuple(search))

    @staticmethod
    def _parse(text: str) -> MilvusLocation:
        if text.startswith(SCHEME):
            hostport, _, collection = text[len(SCHEME) :].partition("/")
            if not hostport or not collection or "/" in collection:
                raise ValueError(f"{text!r}: want milvus://HOST:PORT/COLLECTION")
            return MilvusLocation(f"http://{hostport}", collection)
        if text.startswith(LITE_SCHEME):
            path, _, collection = text[len(LITE_SCHEME) :].partition("#")
            if not path.endswith(".db"):
                raise ValueError(
                    f"{text!r}: a Milvus Lite file name ends in .db (milvus-lite:PATH.db#COLLECTION)"
                )
            return MilvusLocation(path, collection or DEFAULT_COLLECTION)
        raise ValueError(
            f"{text!r} is not a Milvus location (milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db)"
        )

    @property
    def is_server(self) -> bool:
        return self.uri.startswith("http")

    def __str__(self) -> str:
        options = ([] if self.consistency == "Strong" else [f"consistency={self.consistency}"]) + [
            f"{k}={v}" for k, v in self.search
        ]
        option = "?" + "&".join(options) if options else ""
        if self.is_server:
            return f"{SCHEME}{self.uri[len('http://') :]}/{self.collection}{option}"
        return f"{LITE_SCHEME}{self.uri}#{self.collection}{option}"


def is_milvus(location: object) -> bool:
    return isinstance(location, str) and location.startswith((SCHEME, LITE_SCHEME))


_lite_users: dict[str, int] = {}  # Milvus Lite file -> open catalogues on it in this process
_lite_lock = threading.Lock()


def connect(uri: str) -> Any:
    """A MilvusClient for `uri`; MilvusUnavailable naming what to install or what failed."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusUnavailable(
            "the Milvus backend needs pymilvus: pip install 'asen-search[milvus]'"
        ) from None
    try:
        client = MilvusClient(uri)
    except Exception as exc:  # pymilvus raises its own types, and grpc's, for an unreachable server
        raise MilvusUnavailable(f"cannot connect to Milvus at {uri}: {exc}") from None
    if not uri.startswith("http"):
        with _lite_lock:
            _lite_users[uri] = _lite_users.get(uri, 0) + 1
    return client


def disconnect(client: Any, uri: str) -> None:
    """Close `client`; after the last catalogue on a Milvus Lite file closes, stop its in-process
    engine, which holds the file's lock (another process may then open it)."""
    client.close()
    if uri.startswith("http"):
        return
    with _lite_lock:
        _lite_users[uri] -= 1
        last = _lite_users[uri] == 0
        if last:
            del _lite_users[uri]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)
