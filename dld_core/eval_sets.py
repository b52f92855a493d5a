"""The project's evaluation sets, in one table: a short key (used in result file names), the name people read
(reports, README, app) and the manifest, relative to the corpus folder (`corpus/` unless told otherwise)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EvalSet:
    key: str        # in result file names: <model>.<key>.<decoder>.json
    name: str       # what a reader sees
    manifest: str   # relative to the corpus folder

    def path(self, corpus_dir: str | Path) -> Path:
        return Path(corpus_dir) / self.manifest


EVAL_SETS = (
    EvalSet("synthetic_test", "Synthetic test (held-out sentences and voices)", "whisper/test.jsonl"),
    EvalSet("fsdd_test", "FSDD real speech (test speaker)", "whisper/fsdd_test.jsonl"),
    EvalSet("real_dev", "Real read speech (pocketsphinx-testdata)", "real_dev/real_dev.jsonl"),
)
BY_KEY = {s.key: s for s in EVAL_SETS}


def by_manifest_name(file_name: str) -> EvalSet | None:
    """The evaluation set whose manifest has this file name (test.jsonl, fsdd_test.jsonl, ...), if any."""
    return next((s for s in EVAL_SETS if Path(s.manifest).name == file_name), None)
