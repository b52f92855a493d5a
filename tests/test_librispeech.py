"""LibriSpeech importer on a tiny fake tree."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from dld_core.audio import load_audio, load_manifest
from dld_core.librispeech import import_librispeech


def _tree(root):
    rows = {"19-198": [("19-198-0000", "HELLO WORLD", 1.0), ("19-198-0001", "IT'S A TEST", 0.5)],
            "26-495": [("26-495-0000", "THE QUICK BROWN FOX", 1.25)]}
    for chapter, utts in rows.items():
        spk, chap = chapter.split("-")
        folder = root / spk / chap
        folder.mkdir(parents=True)
        lines = []
        for utt_id, text, secs in utts:
            t = np.arange(int(secs * 16000)) / 16000
            sf.write(folder / f"{utt_id}.flac", (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000)
            lines.append(f"{utt_id} {text}")
        lines.append("26-495-9999 MISSING AUDIO" if spk == "26" else "")
        (folder / f"{chapter}.trans.txt").write_text("\n".join(lines) + "\n")


def test_import_tree(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean"
    _tree(root)
    out = tmp_path / "out" / "dev.jsonl"
    n = import_librispeech(str(root), str(out))
    assert n == 3
    raw = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(not r["audio_filepath"].startswith("/") for r in raw)
    rows = load_manifest(out)
    by_id = {r["id"]: r for r in rows}
    assert by_id["19-198-0001"]["text"] == "it's a test"
    assert by_id["26-495-0000"]["duration"] == pytest.approx(1.25)
    assert by_id["19-198-0000"]["speaker"] == "librispeech:19"
    assert load_audio(by_id["19-198-0000"]["audio_filepath"]).duration == pytest.approx(1.0)


def test_import_to_folder_and_errors(tmp_path):
    root = tmp_path / "ls"
    _tree(root)
    assert import_librispeech(str(root), str(tmp_path / "m")) == 3
    assert (tmp_path / "m" / "manifest.jsonl").exists()
    with pytest.raises(FileNotFoundError):
        import_librispeech(str(tmp_path / "absent"), str(tmp_path / "x.jsonl"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        import_librispeech(str(tmp_path / "empty"), str(tmp_path / "x.jsonl"))
