"""Import a LibriSpeech-layout folder (speaker/chapter/*.trans.txt + *.flac) as a JSONL manifest."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from dld_core.audio import write_manifest
from dld_core.text import normalize_text

AUDIO_EXTS = (".flac", ".wav", ".ogg", ".mp3")


def import_librispeech(root: str, out: str) -> int:
    """Write a manifest at ``out`` (a .jsonl path, or a folder -> ``out/manifest.jsonl``).

    Every line of every ``*.trans.txt`` ("<utt-id> TRANSCRIPT") becomes one row whose audio is
    ``<utt-id>.flac`` next to it; durations come from the file headers (nothing is decoded).
    Utterances whose audio is missing or unreadable are skipped with a warning on stderr.
    Returns the number of rows written.
    """
    import soundfile as sf

    root_p = Path(root)
    if not root_p.is_dir():
        raise FileNotFoundError(f"LibriSpeech folder not found: {root}")
    out_p = Path(out)
    if out_p.suffix != ".jsonl":
        out_p = out_p / "manifest.jsonl"
    rows: list[dict] = []
    skipped = 0
    trans_files = sorted(root_p.rglob("*.trans.txt"))
    if not trans_files:
        raise FileNotFoundError(f"no *.trans.txt files under {root} (expected speaker/chapter/*.trans.txt)")
    for trans in trans_files:
        folder = trans.parent
        parts = folder.relative_to(root_p).parts
        speaker = parts[-2] if len(parts) >= 2 else folder.name.split("-")[0]
        with open(trans, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                utt_id, _, transcript = line.partition(" ")
                audio = next((folder / f"{utt_id}{ext}" for ext in AUDIO_EXTS if (folder / f"{utt_id}{ext}").exists()),
                             None)
                if audio is None:
                    skipped += 1
                    continue
                try:
                    info = sf.info(str(audio))
                    duration = info.frames / info.samplerate
                except Exception:  # unreadable header
                    skipped += 1
                    continue
                text = normalize_text(transcript)
                if not text or duration <= 0:
                    skipped += 1
                    continue
                rows.append({"audio_filepath": str(audio.resolve()), "text": text, "duration": round(duration, 4),
                             "speaker": f"librispeech:{speaker}", "source": "librispeech", "id": utt_id})
    if skipped:
        print(f"import_librispeech: skipped {skipped} utterances with missing/unreadable audio or empty text",
              file=sys.stderr)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out_p, rows)
    return len(rows)


if __name__ == "__main__":  # pragma: no cover
    print(import_librispeech(sys.argv[1], sys.argv[2]))
