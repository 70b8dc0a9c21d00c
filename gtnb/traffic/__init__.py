"""Client traffic with httpx: one long request (S1/S2), an HTTP/2 stream (S4), N-worker load (S3).

Every request becomes one `RequestResult` (a client.csv row, docs/contracts.md). Failures are
classified by what went wrong on the wire and mapped to the exit code the seed's curl would have
given, so a run reads the same as the seed's `curl.out` / `curl.tsv`. Requests are never retried:
curl silently retries an HTTP/2 REFUSED_STREAM and shows a late 200, which hides the very cut the
experiment looks for.

Like curl's `--resolve example.local:443:<balancer>`, requests go to the balancer's address with
`Host: example.local` and SNI `example.local`, verified against the lab's private CA.
"""

from .classify import classify
from .load import Load
from .pin import Pin
from .results import (
    CHUNK_COLUMNS,
    CLIENT_COLUMNS,
    FINAL_LINE,
    ChunkArrival,
    RequestResult,
    write_chunks_csv,
    write_client_csv,
)
from .single import Canceller, long_request, stream_request

__all__ = [
    "CLIENT_COLUMNS",
    "CHUNK_COLUMNS",
    "FINAL_LINE",
    "Pin",
    "RequestResult",
    "ChunkArrival",
    "Canceller",
    "classify",
    "long_request",
    "stream_request",
    "Load",
    "write_client_csv",
    "write_chunks_csv",
]
