"""Results of client traffic: one `RequestResult` per request (a client.csv row, columns in
docs/contracts.md) and the arrival time of each stream chunk (chunks.csv)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["CLIENT_COLUMNS", "CHUNK_COLUMNS", "FINAL_LINE", "RequestResult", "ChunkArrival",
           "write_client_csv", "write_chunks_csv"]

CLIENT_COLUMNS = (
    "worker", "request_id", "path", "http_version", "t_start", "t_end", "status", "error",
    "curl_exit", "bytes", "chunks", "complete", "detail",
)  # fmt: skip
CHUNK_COLUMNS = ("request_id", "k", "t")
FINAL_LINE = "done"  # the backend's last stream line; without it the stream was cut


@dataclass
class RequestResult:
    """One client.csv row (columns and meanings in docs/contracts.md)."""

    worker: int
    request_id: str
    path: str
    http_version: str
    t_start: float
    t_end: float = 0.0
    status: int | None = None
    error: str = ""
    curl_exit: int = 0
    bytes: int = 0
    chunks: int = 0
    complete: bool = False
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.complete and not self.error


@dataclass(frozen=True)
class ChunkArrival:
    request_id: str
    k: int
    t: float


def write_client_csv(path: Path, results: Iterable[RequestResult]) -> int:
    """Write client.csv; returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CLIENT_COLUMNS)
        writer.writeheader()
        for r in results:
            row = asdict(r)
            row["status"] = "" if r.status is None else r.status
            row["complete"] = "true" if r.complete else "false"
            row["t_start"], row["t_end"] = f"{r.t_start:.6f}", f"{r.t_end:.6f}"
            writer.writerow(row)
            n += 1
    return n


def write_chunks_csv(path: Path, arrivals: Iterable[ChunkArrival]) -> int:
    """Write chunks.csv (S4); returns the number of rows."""
    n = 0
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CHUNK_COLUMNS)
        for a in arrivals:
            writer.writerow((a.request_id, a.k, f"{a.t:.6f}"))
            n += 1
    return n


assert tuple(f.name for f in fields(RequestResult)) == CLIENT_COLUMNS  # the contract's order
