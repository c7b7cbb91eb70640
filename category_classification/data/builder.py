"""From offers to a saved DatasetDict with bounded memory: Arrow shards, labels, grouped splits, a report.

Pass 1 streams offers into Arrow shards (one per LSPC member, in parallel), each row with its source
category. Pass 2 reads only the int columns to label the rows (map, cluster majority of the `category`
field, or MWPD's own), caps the Other class and splits, then copies each shard's rows into per-split
Arrow files, batch by batch. The corpus is never a Python list; peak memory is a few ints per offer.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from category_classification.core.cli import UserError
from category_classification.data.records import OFFER_ID_COLUMN, TEXT_TITLE_COLUMN  # where every reader sees them
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
    breadcrumb: bool = False  # the shop's breadcrumb ends the text (MWPD); a text setting, see core/artifacts.py
    max_other_fraction: float | None = None
    allow_empty_splits: bool = False


@dataclass
class Shard:
    path: str
    rows: int
    forced_test: bool = False  # every row goes to test (MWPD --mwpd_test)
    source: str = ""
    counts: dict = field(default_factory=dict)
    categories: list = field(default_factory=list)  # names of the `source` column's codes
    votes: tuple | None = None  # (cluster ids, category codes, offers): the offers' own categories


@dataclass
class LabelPlan:
    """How pass 2 labels a row. LSPC rows carry only their source category (the map's, or with
    `by_cluster` the majority of the cluster's own `category` fields); MWPD rows arrive labelled."""

    targets: list | None  # target classes; None = every category seen (--categories all)
    other_label: str | None = None
    keep_unmapped: bool = False
    by_cluster: bool = False
    levels: dict = field(default_factory=dict)  # level column -> class names (MWPD --label_level all)
    parents: dict = field(default_factory=dict)  # hierarchy.json "parents"

    @property
    def names(self) -> list:
        """ClassLabel names of `label`: the targets sorted, the Other class last."""
        return sorted(self.targets) + ([self.other_label] if self.other_label else [])

    def labels_for(self, categories) -> list:
        """The label id of each category (-1: dropped), the class names indexed once: a free-text `category`
        field with --categories all names as many classes, and a sort and a list search per name took
        minutes for 20k of them."""
        from category_classification.data.lspc import NO_CATEGORY_NAME, NOT_IN_MAP

        index = {n: i for i, n in enumerate(self.names)}
        targets = set(self.targets)
        other = len(index) - 1 if self.other_label else -1
        return [index[c] if c in targets else
                -1 if c in (NOT_IN_MAP, NO_CATEGORY_NAME) and not self.keep_unmapped else other
                for c in categories]


SOURCE_COLUMN = "source_category"  # --other_label datasets: the category each offer came from
# Breadcrumb datasets: each offer's text without the shop's breadcrumb (= `text` when it has none), so a
# trainer can also learn from offers as they arrive without one (LinearConfig.breadcrumb_copies).
TEXT_BARE_COLUMN = "text_bare"
# MWPD 6-class and --other_label datasets: each offer's GS1 level-3 class, so a trainer can learn every target
# class as sub-classes (Clothing is nine product kinds; docs/benchmarks.md, "Offers outside the six classes").
FINE_COLUMN = "fine_category"
STRING_COLUMNS = ("text", TEXT_BARE_COLUMN, TEXT_TITLE_COLUMN, FINE_COLUMN, OFFER_ID_COLUMN)


def features_for(label_names, levels: dict | None = None, source_category: bool = False, bare_text: bool = False,
                 fine_category: bool = False, title_text: bool = False, offer_id: bool = False):
    from datasets import ClassLabel, Features, Value

    cols = {"text": Value("string")}
    if bare_text:
        cols[TEXT_BARE_COLUMN] = Value("string")
    if title_text:
        cols[TEXT_TITLE_COLUMN] = Value("string")
    cols["label"] = ClassLabel(names=list(label_names))
    cols.update({name: ClassLabel(names=list(names)) for name, names in (levels or {}).items()})
    cols["cluster"] = Value("int64")
    if source_category:  # lets a trainer split Other by where its offers came from
        cols[SOURCE_COLUMN] = Value("string")
    if fine_category:
        cols[FINE_COLUMN] = Value("string")
    if offer_id:
        cols[OFFER_ID_COLUMN] = Value("string")
    return Features(cols)


def shard_schema(levels=(), bare_text: bool = False, fine_category: bool = False, title_text: bool = False,
                 offer_id: bool = False) -> pa.Schema:
    """Pass-1 rows: the final columns as plain ints, plus `source` (the row's source-category code)."""
    texts = [("text", pa.string())] + ([(TEXT_BARE_COLUMN, pa.string())] if bare_text else []) + (
        [(TEXT_TITLE_COLUMN, pa.string())] if title_text else [])
    fine = [(FINE_COLUMN, pa.string())] if fine_category else []
    ids = [(OFFER_ID_COLUMN, pa.string())] if offer_id else []
    return pa.schema([*texts, ("label", pa.int64()), *((lv, pa.int64()) for lv in levels),
                      ("cluster", pa.int64()), ("source", pa.int32()), *fine, *ids])


class ShardWriter:
    """Appends column batches (dicts: "text" (and with `bare_text` TEXT_BARE_COLUMN, with `title_text`
    TEXT_TITLE_COLUMN, with `fine_category` FINE_COLUMN, with `offer_id` OFFER_ID_COLUMN) a list, the rest
    arrays; a missing `label` is -1) to one Arrow stream file."""

    def __init__(self, path, levels=(), bare_text: bool = False, fine_category: bool = False,
                 title_text: bool = False, offer_id: bool = False):
        self.path = str(path)
        self.schema = shard_schema(levels, bare_text, fine_category, title_text, offer_id)
        self.sink = pa.OSFile(self.path, "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)
        self.rows = 0
        self._pending: list = []

    def add(self, columns: dict):
        if len(columns["text"]):
            self._pending.append(columns)
            if sum(len(p["text"]) for p in self._pending) >= SHARD_BATCH:
                self._flush()

    def _flush(self):
        if not self._pending:
            return
        arrays = []
        for f in self.schema:
            if f.name in STRING_COLUMNS:
                arrays.append(pa.array([t for p in self._pending for t in p[f.name]], pa.string()))
                continue
            parts = [p[f.name] if f.name in p else np.full(len(p["text"]), -1) for p in self._pending]
            arrays.append(pa.array(np.concatenate(parts).astype(f.type.to_pandas_dtype())))
        self._pending = []
        batch = pa.record_batch(arrays, schema=self.schema)
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


def _init_worker(zip_path, plan, tmp_dir):
    _WORKER.update(zip_path=zip_path, plan=plan, tmp_dir=tmp_dir)


def _member_to_shard(task):
    from category_classification.data.lspc import read_member

    index, member = task
    w = _WORKER
    counts: Counter = Counter()
    writer = ShardWriter(Path(w["tmp_dir"]) / f"shard-{index:05d}.arrow", title_text=True, offer_id=True)
    rows = None
    for item in read_member(w["zip_path"], member, w["plan"], counts):
        if isinstance(item, dict):
            writer.add(item)
        else:
            rows = item  # the last item: the member's category vocabulary and cluster votes
    n = writer.close()
    return index, Shard(writer.path, n, source=member, counts=dict(counts), categories=list(rows.vocab),
                        votes=rows.votes())


def lspc_shards(zip_path, plan, members, tmp_dir, config: BuildConfig, progress=True) -> list[Shard]:
    """Stream every member into its own shard, `config.read_workers` members at a time."""
    from tqdm.auto import tqdm

    tasks = list(enumerate(members))
    init = (str(zip_path), plan, str(tmp_dir))
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


# -- pass 2: label, cap the Other class, split and save ---------------------------------------------
def _global_codes(shards):
    """One source-category vocabulary over every shard, and each shard's code -> global code array."""
    names = sorted({c for s in shards for c in s.categories})
    index = {n: i for i, n in enumerate(names)}
    return names, [np.array([index[c] for c in s.categories] or [0], dtype=np.int64) for s in shards]


def _row_arrays(shards, translate):
    """cluster, label, global source code and forced-test flag per row, in shard order."""
    cols: dict = {"cluster": [], "label": [], "source": [], "forced": []}
    for s, tr in zip(shards, translate):
        if s.rows == 0:
            continue
        table = _read_table(s.path)
        cols["cluster"].append(table.column("cluster").to_numpy())
        cols["label"].append(table.column("label").to_numpy())
        cols["source"].append(tr[table.column("source").to_numpy()])
        cols["forced"].append(np.full(s.rows, s.forced_test))
    empty = {"cluster": np.int64, "label": np.int64, "source": np.int64, "forced": bool}
    return [np.concatenate(v) if v else np.zeros(0, empty[k]) for k, v in cols.items()]


def cluster_majority(shards, translate):
    """Majority category code per cluster from the offers' own `category` votes (ties: the first name
    in sorted order). Returns (sorted clusters, codes, conflict counts)."""
    from category_classification.data.lspc import count_pairs

    parts = [(s.votes, tr) for s, tr in zip(shards, translate) if s.votes is not None]
    report = {"clusters": 0, "clusters_with_conflict": 0, "offers_outside_cluster_majority": 0}
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), report
    cids = np.concatenate([v[0] for v, _ in parts])
    codes = np.concatenate([tr[v[1]] for v, tr in parts])
    votes = np.concatenate([v[2] for v, _ in parts])
    cids, codes, votes = count_pairs(cids, codes, votes)  # one row per (cluster, category) pair
    order = np.lexsort((codes, -votes, cids))
    cids, codes, votes = cids[order], codes[order], votes[order]
    first = np.r_[True, cids[1:] != cids[:-1]]
    per_cluster = np.diff(np.r_[np.flatnonzero(first), cids.size])
    report.update(clusters=int(first.sum()), clusters_with_conflict=int((per_cluster > 1).sum()),
                  offers_outside_cluster_majority=int(votes.sum() - votes[first].sum()))
    return cids[first], codes[first], report


def label_rows(plan: LabelPlan, categories, clusters, labels, sources, majority=None):
    """Final label per row (-1: dropped) and the source category each label came from."""
    from category_classification.data.lspc import NO_CATEGORY_NAME

    if majority is not None:  # the offers' own field: a row takes its cluster's majority category
        mc, mk = majority[0], majority[1]
        pos = np.minimum(np.searchsorted(mc, clusters), max(mc.size - 1, 0))
        found = (mc[pos] == clusters) if mc.size else np.zeros(clusters.size, bool)
        sources = np.where(found, mk[pos] if mc.size else 0, categories.index(NO_CATEGORY_NAME))
    table = np.array(plan.labels_for(categories) or [-1], dtype=np.int64)
    return np.where(labels < 0, table[sources], labels), sources


def _choose_rows(plan, config, clusters, labels, counts: Counter, forced=None) -> np.ndarray:
    """Rows that stay: labelled ones, with whole Other groups sampled away above --max_other_fraction. The
    cap shapes what is trained on: a test file's rows (`forced`) are scored as they are, never thinned."""
    from category_classification.data.splits import cap_group_share

    keep = labels >= 0
    counts["cluster_category_outside"] += int((~keep).sum())
    if plan.other_label and config.max_other_fraction is not None:
        pool = np.flatnonzero(keep if forced is None else keep & ~forced)
        other = labels[pool] == len(plan.names) - 1
        dropped = pool[~cap_group_share(clusters[pool], other, config.max_other_fraction, config.seed)]
        keep[dropped] = False
        counts["other_over_cap"] += int(dropped.size)
    return keep


def _assign(clusters, labels, forced, keep, config: BuildConfig, test_file: bool = False) -> np.ndarray:
    """Split code per row (-1 for rows not kept); refuses (or warns about) an empty validation/test. With a
    test file (`test_file`: a forced-test shard) the test split is its rows alone, even none of them: it is
    never cut from the other files instead."""
    codes = np.full(clusters.size, -1, dtype=np.int8)
    has_forced = test_file  # forced rows come from a test file alone
    codes[keep] = assign_splits(clusters[keep], labels[keep], config.val_size,
                                0.0 if has_forced else config.test_size, config.seed,
                                forced_test=forced[keep] if has_forced else None)
    # a test file kept whole cannot be too small for the sizes (one that kept nothing is its reader's to report)
    wanted = {"validation": config.val_size > 0, "test": config.test_size > 0 and not has_forced}
    empty = [name for code, name in enumerate(SPLIT_NAMES) if wanted.get(name) and not (codes == code).any()]
    if empty:
        msg = (f"the {' and '.join(empty)} split came out empty: {int(keep.sum())} offers in "
               f"{np.unique(clusters[keep]).size} groups are too few for --val_size/--test_size")
        if not config.allow_empty_splits:
            raise UserError(msg + "; add offers, raise the sizes, or pass --allow_empty_splits")
        print(f"WARNING: {msg}; trainers cannot select or score on it", file=sys.stderr, flush=True)
    return codes


def _write_splits(shards, codes, labels, plan: LabelPlan, tmp_dir: Path, sources=None, categories=()) -> dict:
    """Copy each shard's rows, batch by batch, into one Arrow file per split with the final labels (and,
    for an Other class, each row's source category name; the bare text, the title text, the fine category and
    the offer id where the shards hold them)."""
    with_source = bool(plan.other_label)
    shard_columns = {n for s in shards for n in pa.ipc.open_stream(pa.memory_map(s.path)).schema.names}
    bare, fine = TEXT_BARE_COLUMN in shard_columns, FINE_COLUMN in shard_columns
    title, ids = TEXT_TITLE_COLUMN in shard_columns, OFFER_ID_COLUMN in shard_columns
    schema = features_for(plan.names, plan.levels, source_category=with_source, bare_text=bare, title_text=title,
                          fine_category=fine, offer_id=ids).arrow_schema
    names = pa.array(list(categories) or [""], pa.string())
    paths = {name: tmp_dir / f"{name}.arrow" for name in SPLIT_NAMES}
    sinks = {name: pa.OSFile(str(p), "wb") for name, p in paths.items()}
    writers = {name: pa.ipc.new_stream(sinks[name], schema) for name in SPLIT_NAMES}
    offset = 0
    for s in shards:
        if s.rows == 0:
            continue
        for batch in pa.ipc.open_stream(pa.memory_map(s.path)):
            part = codes[offset: offset + batch.num_rows]
            label = pa.array(labels[offset: offset + batch.num_rows], pa.int64())
            texts = [batch.column(c) for c, on in (("text", True), (TEXT_BARE_COLUMN, bare), (TEXT_TITLE_COLUMN, title))
                     if on]
            cols = [*texts, label, *(batch.column(c) for c in plan.levels), batch.column("cluster")]
            if with_source:
                cols.append(names.take(pa.array(sources[offset: offset + batch.num_rows], pa.int64())))
            if fine:
                cols.append(batch.column(FINE_COLUMN))
            if ids:
                cols.append(batch.column(OFFER_ID_COLUMN))
            offset += batch.num_rows
            rows = pa.record_batch(cols, schema=schema)
            for code, name in enumerate(SPLIT_NAMES):
                mask = part == code
                if mask.any():
                    writers[name].write_batch(rows.filter(pa.array(mask)))
    for name in SPLIT_NAMES:
        writers[name].close()
        sinks[name].close()
    return paths


def _add_language(splits, config: BuildConfig, tmp_dir: Path):
    from datasets import Value

    from category_classification.data.language import detect_languages

    for name in SPLIT_NAMES:
        if len(splits[name]) == 0:  # map() runs no batch on an empty split and adds no column: every split
            splits[name] = splits[name].add_column("language", [], feature=Value("string"))  # same features
            continue
        splits[name] = splits[name].map(
            lambda b: {"language": detect_languages(t[:200] for t in b["text"])},
            batched=True, batch_size=2000, num_proc=config.language_num_proc if len(splits[name]) > 10000 else None,
            cache_file_name=str(tmp_dir / f"{name}-language.arrow"), desc=f"language ({name})",
            load_from_cache_file=False)


def _summary(dsd, label_names) -> dict:
    summary = {}
    for name, ds in dsd.items():
        lab = np.bincount(ds.data.column("label").to_numpy(), minlength=len(label_names))
        entry = {"records": len(ds), "labels": {n: int(c) for n, c in zip(label_names, lab)}}
        if "language" in ds.column_names:
            entry["languages"] = dict(Counter(ds.data.column("language").to_pylist()).most_common())
        summary[name] = entry
    return summary


def split_and_save(shards, plan: LabelPlan, config: BuildConfig, tmp_dir: Path, dest: Path,
                   counts: Counter, progress=True):
    """Label, cap, split and save the DatasetDict into `dest`; returns (DatasetDict, summary, report extras)."""
    from datasets import Dataset, DatasetDict, concatenate_datasets
    from category_classification.data.lspc import NO_CATEGORY_NAME, NOT_IN_MAP

    if not progress:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    categories, translate = _global_codes(shards)
    clusters, labels, sources, forced = _row_arrays(shards, translate)
    extra: dict = {}
    majority = None
    if plan.by_cluster:
        majority = cluster_majority(shards, translate)
        extra["category_field"] = majority[2]
    if plan.targets is None:  # --categories all
        plan.targets = [c for c in categories if c not in (NOT_IN_MAP, NO_CATEGORY_NAME)]
    if plan.other_label in plan.targets:
        raise UserError(f"--other_label {plan.other_label} is also a target class; choose another name")
    labels, sources = label_rows(plan, categories, clusters, labels, sources, majority)
    keep = _choose_rows(plan, config, clusters, labels, counts, forced)
    if not keep.any():
        reasons = ", ".join(f"{k} {v:,}" for k, v in counts.most_common() if k not in ("lines_read", "records_kept"))
        raise UserError(f"no offer was kept of {counts.get('lines_read', 0):,} lines read ({reasons or 'none'}): "
                        "check --map / --categories against the corpus")
    codes = _assign(clusters, labels, forced, keep, config, test_file=any(s.forced_test for s in shards))
    counts["records_kept"] = int(keep.sum())
    if plan.other_label:
        other = keep & (labels == len(plan.names) - 1)
        extra["other_by_source_category"] = dict(Counter(categories[c] for c in sources[other].tolist()).most_common())
    paths = _write_splits(shards, codes, labels, plan, tmp_dir, sources, categories)
    splits = {name: Dataset.from_file(str(paths[name])) for name in SPLIT_NAMES}
    if config.add_language:
        _add_language(splits, config, tmp_dir)
    if config.full:
        splits[config.full_split_name] = concatenate_datasets([splits[n] for n in SPLIT_NAMES])
    dsd = DatasetDict(splits)
    # an empty split (--allow_empty_splits) is saved as one empty shard: with the library's default of
    # none, datasets 5.2 cannot load the dataset back
    dsd.save_to_disk(str(dest), num_shards={n: 1 for n, d in splits.items() if d.num_rows == 0} or None)
    empty = [n for n, c in zip(plan.names, np.bincount(labels[keep], minlength=len(plan.names))) if c == 0]
    if empty:  # a class the user asked for that no offer has: trainers must cope, the user should know
        print(f"WARNING: no offer for class(es) {', '.join(empty)}", file=sys.stderr, flush=True)
        extra["classes_without_offers"] = empty
    if majority is not None:
        extra["derived_map"] = write_map(Path(dest) / "PDC2020_map.tsv", majority[0], majority[1], categories)
    return dsd, _summary(dsd, plan.names), extra


def write_map(path: Path, clusters, codes, categories) -> str:
    """The cluster -> category map derived from the offers, in the --map format."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("cluster_id\tcategory\n")
        for start in range(0, clusters.size, 1 << 16):
            part = zip(clusters[start: start + (1 << 16)].tolist(), codes[start: start + (1 << 16)].tolist())
            fh.write("".join(f"{c}\t{categories[k]}\n" for c, k in part))
    return path.name


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
