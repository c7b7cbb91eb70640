"""From offers to a saved DatasetDict with bounded memory: Arrow shards, grouped splits, a build report.

Pass 1 streams offers into Arrow shards (one per LSPC member, in parallel). Pass 2 reads only the
cluster and label columns to split, then copies each shard's rows into per-split Arrow files, batch by
batch. The corpus is never a Python list; peak memory is a few arrays of one int per offer.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from category_classification.core.cli import UserError
from category_classification.data.splits import SPLIT_NAMES, assign_splits

SHARD_BATCH = 65536


@dataclass
class BuildConfig:
    out: str
    val_size: float = 0.05
    test_size: float = 0.10
    seed: int = 42
    full: bool = False
    full_split_name: str = "full"
    add_language: bool = False
    language_num_proc: int = 1
    read_workers: int = 2
    max_description_chars: int = 300


@dataclass
class Shard:
    path: str
    rows: int
    forced_test: bool = False  # every row goes to test (MWPD --mwpd_test)
    source: str = ""
    counts: dict = field(default_factory=dict)


def features_for(label_names):
    from datasets import ClassLabel, Features, Value

    return Features({"text": Value("string"), "label": ClassLabel(names=list(label_names)),
                     "cluster": Value("int64")})


class ShardWriter:
    """Appends (texts, labels, clusters) batches to one Arrow stream file in the datasets format."""

    def __init__(self, path, label_names):
        self.path = str(path)
        self.schema = features_for(label_names).arrow_schema
        self.sink = pa.OSFile(self.path, "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)
        self.rows = 0
        self._pending: list = []

    def add(self, texts, labels, clusters):
        if len(texts):
            self._pending.append((texts, labels, clusters))
            if sum(len(p[0]) for p in self._pending) >= SHARD_BATCH:
                self._flush()

    def _flush(self):
        if not self._pending:
            return
        texts = [t for p in self._pending for t in p[0]]
        labels = np.concatenate([p[1] for p in self._pending])
        clusters = np.concatenate([p[2] for p in self._pending])
        self._pending = []
        batch = pa.record_batch([pa.array(texts, pa.string()), pa.array(labels, pa.int64()),
                                 pa.array(clusters, pa.int64())], schema=self.schema)
        self.writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> int:
        self._flush()
        self.writer.close()
        self.sink.close()
        return self.rows


def _read_table(path) -> pa.Table:
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()


# -- pass 1 for the LSPC zip: one worker per member -------------------------------------------------
_WORKER: dict = {}


def _init_worker(zip_path, cmap, tmp_dir, max_description_chars):
    _WORKER.update(zip_path=zip_path, cmap=cmap, tmp_dir=tmp_dir, max_description_chars=max_description_chars)


def _member_to_shard(task):
    from category_classification.data.lspc import read_member

    index, member = task
    w = _WORKER
    counts: Counter = Counter()
    writer = ShardWriter(Path(w["tmp_dir"]) / f"shard-{index:05d}.arrow", w["cmap"].names)
    for texts, labels, clusters in read_member(w["zip_path"], member, w["cmap"], counts,
                                               w["max_description_chars"]):
        writer.add(texts, labels, clusters)
    rows = writer.close()
    return index, Shard(writer.path, rows, source=member, counts=dict(counts))


def lspc_shards(zip_path, cmap, members, tmp_dir, config: BuildConfig, progress=True) -> list[Shard]:
    """Stream every member into its own shard, `config.read_workers` members at a time."""
    from tqdm.auto import tqdm

    tasks = list(enumerate(members))
    init = (str(zip_path), cmap, str(tmp_dir), config.max_description_chars)
    bar = tqdm(total=len(tasks), unit="member", desc="reading", disable=not progress)
    results = {}
    if config.read_workers <= 1:
        _init_worker(*init)
        pool = contextlib.nullcontext()
        done = map(_member_to_shard, tasks)
    else:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(config.read_workers, initializer=_init_worker, initargs=init)
        done = pool.imap_unordered(_member_to_shard, tasks)
    with pool:
        for i, shard in done:
            results[i] = shard
            bar.update(1)
            bar.set_postfix(kept=sum(s.rows for s in results.values()))
    bar.close()
    return [results[i] for i in sorted(results)]  # member order, whatever order they finished in


# -- pass 2: split and save --------------------------------------------------------------------------
def _group_arrays(shards):
    clusters, labels, forced = [], [], []
    for s in shards:
        if s.rows == 0:
            continue
        table = _read_table(s.path)
        clusters.append(table.column("cluster").to_numpy())
        labels.append(table.column("label").to_numpy())
        forced.append(np.full(s.rows, s.forced_test))
    if not clusters:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    return np.concatenate(clusters), np.concatenate(labels), np.concatenate(forced)


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / "dataset_dict.json").exists():
            raise UserError(f"--out {out} exists and is not a dataset this builder wrote; choose another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def split_and_save(shards, label_names, config: BuildConfig, tmp_dir: Path, progress=True):
    """Write the DatasetDict to `config.out`; returns (DatasetDict, per-split summary)."""
    from datasets import Dataset, DatasetDict, concatenate_datasets

    if not progress:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    clusters, labels, forced = _group_arrays(shards)
    if clusters.size == 0:
        raise UserError("no offer was kept: check that the map's cluster ids occur in the corpus "
                        "(see build_report.json for the skip reasons)")
    has_forced = bool(forced.any())
    codes = assign_splits(clusters, labels, config.val_size, 0.0 if has_forced else config.test_size,
                          config.seed, forced_test=forced if has_forced else None)
    del clusters, forced

    schema = features_for(label_names).arrow_schema
    paths = {name: tmp_dir / f"{name}.arrow" for name in SPLIT_NAMES}
    sinks = {name: pa.OSFile(str(p), "wb") for name, p in paths.items()}
    writers = {name: pa.ipc.new_stream(sinks[name], schema) for name in SPLIT_NAMES}
    offset = 0
    for s in shards:
        if s.rows == 0:
            continue
        reader = pa.ipc.open_stream(pa.memory_map(s.path))
        for batch in reader:
            part = codes[offset: offset + batch.num_rows]
            offset += batch.num_rows
            for code, name in enumerate(SPLIT_NAMES):
                mask = part == code
                if mask.any():
                    writers[name].write_batch(batch.filter(pa.array(mask)))
    for name in SPLIT_NAMES:
        writers[name].close()
        sinks[name].close()

    splits = {name: Dataset.from_file(str(paths[name])) for name in SPLIT_NAMES}
    if config.add_language:
        from category_classification.data.language import detect_languages

        for name in SPLIT_NAMES:
            splits[name] = splits[name].map(
                lambda b: {"language": detect_languages(t[:200] for t in b["text"])},
                batched=True, batch_size=2000, num_proc=config.language_num_proc if len(splits[name]) > 10000 else None,
                cache_file_name=str(tmp_dir / f"{name}-language.arrow"), desc=f"language ({name})",
                load_from_cache_file=False)
    if config.full:
        splits[config.full_split_name] = concatenate_datasets([splits[n] for n in SPLIT_NAMES])

    out = Path(config.out)
    _prepare_out(out)
    dsd = DatasetDict(splits)
    dsd.save_to_disk(str(out))

    summary = {}
    for name, ds in dsd.items():
        lab = np.bincount(ds.data.column("label").to_numpy(), minlength=len(label_names))
        entry = {"records": len(ds), "labels": {n: int(c) for n, c in zip(label_names, lab)}}
        if "language" in ds.column_names:
            entry["languages"] = dict(Counter(ds.data.column("language").to_pylist()).most_common())
        summary[name] = entry
    return dsd, summary


def merge_counts(shards) -> Counter:
    total: Counter = Counter()
    for s in shards:
        total.update(s.counts)
    return total


def write_report(out, source: dict, counts: Counter, summary: dict, config: BuildConfig, seconds: float,
                 shards=None, extra: dict | None = None) -> dict:
    kept = counts.get("records_kept", 0)
    skipped = {k: v for k, v in counts.items() if k not in ("lines_read", "records_kept") and v}
    report = {
        "source": source,
        "lines_read": counts.get("lines_read", 0),
        "records_kept": kept,
        "records_skipped": sum(v for k, v in skipped.items() if k != "corrupt_member"),
        "skipped_by_reason": dict(sorted(skipped.items())),
        "splits": summary,
        "config": asdict(config),
        "seconds": round(seconds, 2),
        "offers_per_second": round(counts.get("lines_read", 0) / seconds, 1) if seconds > 0 else None,
    }
    if shards is not None:
        report["members"] = [{"member": s.source, "records_kept": s.rows, **s.counts} for s in shards]
    if extra:
        report.update(extra)
    Path(out, "build_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def print_summary(report: dict) -> None:
    print(f"lines read {report['lines_read']:,}  kept {report['records_kept']:,}  "
          f"skipped {report['records_skipped']:,}  in {report['seconds']:.1f} s")
    for reason, n in report["skipped_by_reason"].items():
        print(f"  skipped {reason:<20} {n:,}")
    for name, entry in report["splits"].items():
        labels = ", ".join(f"{k} {v:,}" for k, v in entry["labels"].items())
        print(f"{name:<11} {entry['records']:>10,}  {labels}")
        if "languages" in entry:
            total = max(entry["records"], 1)
            top = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in list(entry["languages"].items())[:8])
            print(f"{'':<11} languages: {top}")
