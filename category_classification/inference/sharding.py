"""Batch prediction over the processes of a `torchrun` launch (one or several nodes): each rank predicts one
contiguous share of the input into its own part file, and rank 0 joins the parts, in input order, into --out.

The shares are cut where a single process starts a new prediction chunk, so every rank predicts the very
batches one process would (same padding, same float rounding) and the joined parts hold exactly its bytes:
a --zip is shared out as contiguous runs of whole members (chunks restart at each member, batch.chunks),
read by each rank alone; other inputs are counted first and cut at chunk starts. The parts live in
`<out>.shards/` with a manifest until the join, so `--resume` continues every part where it stopped; on
several nodes that folder must be on a filesystem they all share.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from category_classification.core.cli import UserError

MANIFEST = "manifest.json"
# Ranks wait for the slowest share at the end; a share of a whole crawl can take many hours.
BARRIER_TIMEOUT = timedelta(days=7)


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def share(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the records that `rank` predicts: contiguous, sizes differing by at most one."""
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def chunk_size(batch_size: int) -> int:
    """Usable records per chunk of batch.predict_stream (batch_size x its chunk_batches), the unit of the shares."""
    from category_classification.inference.batch import predict_stream

    param = inspect.signature(predict_stream).parameters.get("chunk_batches")
    return batch_size * (param.default if param is not None and isinstance(param.default, int) else 1)


def chunk_starts(records: Iterable, unit: int) -> tuple[int, list[int]]:
    """(number of records, index of the record that opens each chunk of `unit` records)."""
    total = sum(1 for _ in records)  # every record fills a chunk: a bad one gets its own error line
    return total, list(range(0, total, unit))


def record_share(total: int, starts: list[int], rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of the records of `rank`: whole chunks, shared out by `share`, contiguous over the ranks."""
    first, last = share(len(starts), rank, world_size)
    start = 0 if rank == 0 else (starts[first] if first < len(starts) else total)
    return start, (starts[last] if last < len(starts) else total)


def member_shares(sizes: list[int], world_size: int) -> list[range]:
    """Indexes of the members each rank reads: contiguous runs in zip order, balanced by byte size (a member
    goes to the rank whose equal slice of the total bytes holds its middle byte)."""
    total, before, owner = max(sum(sizes), 1), 0, []
    for size in sizes:
        owner.append(min(world_size - 1, (2 * before + size) * world_size // (2 * total)))
        before += size
    return [range(owner.index(r), len(owner) - owner[::-1].index(r)) if r in owner else range(0, 0)
            for r in range(world_size)]


def zip_members(zip_path) -> list[tuple[str, int]]:
    """(name, size) of the corpus members in reading order, sizes from the zip directory (nothing unpacked)."""
    import zipfile

    from category_classification.data.lspc import list_members

    names = list_members(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        return [(name, zf.getinfo(name).file_size) for name in names]


def shard_dir(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".shards")


_OURS = re.compile(r"(manifest\.json|\.manifest\.json\.tmp\d+|part-\d{5}-of-\d{5}\.jsonl(\.partial)?)")


def foreign_files(folder: Path) -> list[str]:
    """Entries of a shards folder that a sharded run did not write (a user's notes, a folder of theirs)."""
    if not folder.is_dir():
        return [folder.name] if folder.exists() else []
    return sorted(e.name for e in folder.iterdir() if not (e.is_file() and _OURS.fullmatch(e.name)))


def remove_shard_dir(out) -> None:
    """Delete the shards folder of --out: only the files a sharded run writes, then the folder if empty."""
    folder = shard_dir(out)
    if foreign_files(folder):
        raise UserError(f"{folder} holds files a sharded run did not write ({', '.join(foreign_files(folder)[:3])}); "
                        "move them away or choose another --out")
    for e in folder.iterdir():
        e.unlink()
    folder.rmdir()


def part_path(out, rank: int, world_size: int) -> Path:
    return shard_dir(out) / f"part-{rank:05d}-of-{world_size:05d}.jsonl"


def write_manifest(out, world_size: int, records, unit: int) -> Path:
    """`records`: the record count of an input file, or the [name, size] members of a zip."""
    from category_classification.core.artifacts import write_text_atomic

    return write_text_atomic(shard_dir(out) / MANIFEST,
                             json.dumps({"world_size": world_size, "records": records, "chunk": unit}) + "\n")


def check_manifest(out, world_size: int, records, unit: int) -> None:
    """The shards folder must describe this very split of this input, or the parts would not fit together."""
    path = shard_dir(out) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: with several nodes, --out must be on a filesystem every node shares")
    found = json.loads(path.read_text(encoding="utf-8"))
    if found.get("world_size") != world_size:
        raise UserError(f"{shard_dir(out)} was written by {found.get('world_size')} processes, this run has "
                        f"{world_size}: resume with the same number of processes, or start again without --resume")
    if found.get("records") != records:
        what = (f"{found.get('records')} input records, the input now has {records}" if isinstance(records, int)
                else "other zip members (names or sizes differ)")
        raise UserError(f"{shard_dir(out)} was written for {what}: start again without --resume")
    if found.get("chunk") != unit:
        raise UserError(f"{shard_dir(out)} was written with chunks of {found.get('chunk')} offers, this run makes "
                        f"{unit} (--batch_size changed): resume with the same --batch_size")


def join_parts(out, world_size: int) -> Path:
    """Concatenate the parts in rank order into a temp file beside --out, rename it into place, drop the parts."""
    out = Path(out)
    parts = [part_path(out, r, world_size) for r in range(world_size)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise UserError(f"part files missing ({', '.join(missing[:3])}): with several nodes, --out must be on "
                        "a filesystem every node shares")
    tmp = out.with_name(f".{out.name}.join{os.getpid()}")
    with open(tmp, "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, out)
    remove_shard_dir(out)
    return out


@dataclass
class Shard:
    """This process's share of a sharded prediction run; `None` from `current_shard` outside torchrun."""

    out: Path
    rank: int
    world_size: int
    local_rank: int
    start: int = 0
    stop: int = 0
    members: list | None = None  # a --zip run: the members this rank reads (its records are not counted)

    @property
    def part(self) -> Path:
        return part_path(self.out, self.rank, self.world_size)

    @property
    def size(self) -> int | None:
        return None if self.members is not None else self.stop - self.start

    def device(self, preference: str) -> str:
        """One GPU per process on each node: 'cuda' (or 'auto' where CUDA exists) becomes cuda:<local rank>."""
        import torch

        if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
            return f"cuda:{self.local_rank % max(torch.cuda.device_count(), 1)}"
        return preference

    def begin(self, open_source: Callable[..., Iterable], resume: bool, batch_size: int,
              zip_path=None, log=print) -> Iterator:
        """Agree on the shares and the shards folder, and return this rank's records.

        `open_source(members=None)` opens the input afresh. A zip (`zip_path`) is shared by its members, and
        each rank opens only its own; any other input is read once to count the records and once to predict.
        """
        foreign = foreign_files(shard_dir(self.out))
        if foreign:  # checked by every rank before any work; nothing of the user's is ever deleted
            raise UserError(f"{shard_dir(self.out)} holds files a sharded run did not write ({', '.join(foreign[:3])}); "
                            "move them away or choose another --out")
        if resume and not shard_dir(self.out).exists() and self.out.exists():
            raise UserError(f"{self.out} exists without {shard_dir(self.out)}: it was finished earlier or written "
                            "by a single process (resume that one without torchrun)")
        unit = chunk_size(batch_size)
        if zip_path is not None:
            members = zip_members(zip_path)
            run = member_shares([size for _, size in members], self.world_size)[self.rank]
            mine = [name for name, _ in members[run.start:run.stop]]
            total, self.members = [list(m) for m in members], mine
            log(f"rank {self.rank}: {len(mine)} of {len(members)} zip members"
                + (f" ({mine[0]} .. {mine[-1]})" if mine else " (more processes than members: nothing to do)"))
        else:
            total, starts = chunk_starts(open_source(), unit)
            self.start, self.stop = record_share(total, starts, self.rank, self.world_size)
        _barrier()  # every rank has checked the folder before rank 0 changes it
        if self.rank == 0:
            if not resume and shard_dir(self.out).exists():
                remove_shard_dir(self.out)
            if not (shard_dir(self.out) / MANIFEST).is_file():
                write_manifest(self.out, self.world_size, total, unit)
        _barrier()
        check_manifest(self.out, self.world_size, total, unit)
        if zip_path is not None:
            return iter(open_source(members=self.members))
        return islice(iter(open_source()), self.start, self.stop)

    def finish(self, log=print) -> Path | None:
        """Wait for every rank's part; rank 0 joins them into --out. Returns --out on rank 0."""
        t0 = time.perf_counter()
        _barrier()
        joined = None
        if self.rank == 0:
            joined = join_parts(self.out, self.world_size)
            log(f"{self.out}: joined {self.world_size} parts in {time.perf_counter() - t0:.1f}s")
        _barrier()  # the launch ends only once the output is in place
        import torch.distributed as dist

        dist.destroy_process_group()
        return joined


def current_shard(out, texts_given: bool = False) -> Shard | None:
    """The Shard of this process under torchrun (WORLD_SIZE > 1), else None: a single process writes --out."""
    rank, world_size, local_rank = world_from_env()
    if world_size <= 1:
        return None
    if out is None or texts_given:
        raise UserError("under torchrun, predict.py shards --input or --zip into --out; give one of them")
    _init_group()
    return Shard(Path(out), rank, world_size, local_rank)


def _init_group() -> None:
    """A CPU (gloo) process group for the barriers: it needs no GPU and works between nodes."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
