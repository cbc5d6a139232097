"""CPU per replicated row of the consumer's hot path, in-process: decode → transform → encode.

Captures a backlog once (the drain bench's writer: 1 KB payloads, updates as status
transitions) as raw pgoutput messages into a file, then replays it through the consumer's
own steps, flush batch by flush batch, timing each stage with ``time.process_time`` (GC
tuned as the consumer tunes it). ``--compare DIR`` runs the replay alternately in
subprocesses importing rrlab from DIR (e.g. ``git archive <commit> | tar -x -C DIR`` plus
the built ``_tuples`` extension) and from this tree, so the ratio comes from one run::

    .venv/bin/python benchmarks/hot_path_bench.py --inserts 40000            # capture + replay
    .venv/bin/python benchmarks/hot_path_bench.py --compare /tmp/base --rounds 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rrlab.bench.drain import DrainOptions, build_backlog, slot_copy
from rrlab.config import load_config
from rrlab.infra.embedded_postgres import EmbeddedPostgres
from rrlab.infra.pg_setup import setup_profiling_database
from rrlab.replication.pgoutput import Begin, Commit, Insert, RelationCache, Update, decode_message
from rrlab.replication.stream import ReplicationStream
from rrlab.service import transform
from rrlab.service.consumer import GC_GEN0_THRESHOLD, source_columns
from rrlab.service.events import Transaction
from rrlab.service.sinks import encode_rows
from rrlab.service.transactions import TransactionAssembler

CAPTURE = Path(tempfile.gettempdir()) / "rrlab-hot-path-{inserts}.bin"
STAGES = ("decode", "transform", "encode")


def capture(path: Path, inserts: int) -> None:
    """Write a backlog into a throwaway PostgreSQL and save its pgoutput messages to ``path``."""
    with tempfile.TemporaryDirectory(prefix="rrlab-hot-path-") as home:
        server = EmbeddedPostgres(Path(home) / "pg")
        try:
            config = load_config(overrides={"postgres.database_name": "hot_path_bench"})
            url = setup_profiling_database(server.start(), config)
            slot, publication = config.consumer.slot_name, config.consumer.publication_name
            build_backlog(url, DrainOptions(inserts=inserts))
            chunks: list[bytes] = []
            with slot_copy(url, slot) as name, ReplicationStream(url.url, name, publication) as s:
                # the backlog is all there is: the stream going quiet is its end
                while batch := s.read(3.0):
                    for message in batch:
                        payload = bytes(message.payload)
                        chunks.append(struct.pack(">I", len(payload)) + payload)
        finally:
            server.stop(force=True)
    path.write_bytes(b"".join(chunks))


def load_messages(path: Path) -> list[bytes]:
    data = path.read_bytes()
    messages, pos = [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        messages.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return messages


def assemble(
    messages: list[bytes], relations: RelationCache, assembler: TransactionAssembler
) -> None:
    """Decode ``messages`` as the consumer does and hand their changes to ``assembler``."""
    for payload in messages:
        message = decode_message(payload, relations, decode_old=False)
        kind = type(message)
        if kind is Insert:
            assembler.change("insert", message.new)
        elif kind is Update:
            assembler.change("update", message.new)
        elif kind is Begin:
            assembler.begin(message.xid, message.final_lsn, message.commit_time_us)
        elif kind is Commit:
            assembler.commit(message.end_lsn, message.commit_time_us)


def replay(messages: list[bytes], batch_size: int) -> dict[str, float]:
    """One pass of the consumer's steps over ``messages``: CPU µs per row of each stage."""

    class Collect:
        def __init__(self) -> None:
            self.events: list = []

        def add_transaction(self, transaction: Transaction) -> None:
            self.events.extend(transaction.events)

        def note_position(self, lsn: int) -> None:
            pass

    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
    relations = RelationCache(source_columns())
    receiver = Collect()
    assembler = TransactionAssembler(receiver, now_ms=lambda: 0.0)
    clock = time.process_time
    spent = dict.fromkeys(STAGES, 0.0)
    rows = 0
    for start in range(0, len(messages), batch_size):
        began = clock()
        assemble(messages[start : start + batch_size], relations, assembler)
        decoded = clock()
        for first in range(0, len(receiver.events), batch_size):
            events = receiver.events[first : first + batch_size]
            transformed = clock()
            task_rows = [transform.task_run_row(e) for e in events]
            transform.sort_task_rows(task_rows)
            payload_rows = [transform.payload_row(e) for e in events if e.kind == "insert"]
            transform.sort_payload_rows(payload_rows)
            encoded = clock()
            encode_rows(task_rows)
            encode_rows(payload_rows)
            spent["transform"] += encoded - transformed
            spent["encode"] += clock() - encoded
            rows += len(events)
        receiver.events.clear()
        spent["decode"] += decoded - began
    result = {stage: spent[stage] / rows * 1e6 for stage in STAGES}
    result["total"] = sum(result.values())
    result["rows"] = rows
    return result


def compare(args: argparse.Namespace, capture_path: Path) -> dict:
    """Replays alternating between rrlab from ``args.compare`` (base) and this tree (head)."""
    here = Path(__file__).resolve()
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    trees = {"base": str(Path(args.compare).resolve()), "head": str(here.parent.parent)}
    for number in range(args.rounds):
        # alternate which goes first: the box's load drifts within a round
        order = list(trees.items()) if number % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            env = {**os.environ, "PYTHONPATH": tree}
            command = [sys.executable, str(here), "--capture-file", str(capture_path)]
            command += ["--batch", str(args.batch), "--once"]
            output = subprocess.run(
                command, env=env, check=True, capture_output=True, text=True, cwd=tree
            ).stdout
            runs[name].append(json.loads(output))
    summary: dict = {"rounds": args.rounds, "load_avg": os.getloadavg()}
    for stage in (*STAGES, "total"):
        base = [r[stage] for r in runs["base"]]
        head = [r[stage] for r in runs["head"]]
        ratios = [h / b for h, b in zip(head, base, strict=True)]
        summary[stage] = {
            "base_us": round(statistics.median(base), 2),
            "head_us": round(statistics.median(head), 2),
            "base_range_us": [round(min(base), 2), round(max(base), 2)],
            "head_range_us": [round(min(head), 2), round(max(head), 2)],
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inserts", type=int, default=40_000, help="backlog size to capture")
    parser.add_argument("--capture-file", type=Path, help="default: a file in the temp dir")
    parser.add_argument("--batch", type=int, default=50, help="flush batch (consumer default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", metavar="DIR", help="a tree holding the base rrlab")
    parser.add_argument("--once", action="store_true", help="one replay, one JSON line")
    args = parser.parse_args()
    path = args.capture_file or Path(str(CAPTURE).format(inserts=args.inserts))
    if not path.exists():
        capture(path, args.inserts)
    if args.compare:
        print(json.dumps(compare(args, path), indent=1))
        return
    messages = load_messages(path)
    if args.once:
        print(json.dumps(replay(messages, args.batch)))
        return
    for _round in range(args.rounds):
        result = replay(messages, args.batch)
        print(" ".join(f"{k}={v:.2f}" for k, v in result.items() if k != "rows"), flush=True)


if __name__ == "__main__":
    main()
