"""A small real-speech dev set anyone can rebuild: the transcribed clips of Debian's ``pocketsphinx-testdata``.

``build_real_dev(out_dir)`` converts the clips to 16 kHz mono PCM-16 wav in ``out_dir/audio/``, writes the
NeMo-style manifest ``out_dir/real_dev.jsonl`` ({"audio_filepath", "text", "duration", ...}) and
``out_dir/real_dev_licence.json`` (licence read from the package's copyright file, plus provenance), and
returns the manifest path.

Clips used (11, about 37 s, four speakers):

* ``librivox/``   5 sentences of *Sense and Sensibility* (LibriVox reading), transcripts in ``transcription``
* ``cards/``      5 playing-card phrases ("four queen of clubs"), transcripts in ``cards.transcription``
* ``goforward.raw`` "go forward ten meters": the ``<move>`` rule of ``goforward.gram``, which upstream
  pocketsphinx's tests assert as this recording's transcript

Left out on purpose: ``numbers.raw`` and ``something.raw`` ship without a transcript (three pocketsphinx
decodes of ``numbers.raw`` disagree, so no trustworthy one can be derived), and ``tidigits/`` is an excerpt of
the LDC TIDIGITS corpus, whose licence is not the package's.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from dld_core.audio import write_manifest
from dld_core.audio import SAMPLE_RATE as SR
from dld_core.audio import resample
from dld_core.synth.text import expand_numbers
from dld_core.text import normalize_text

PACKAGE = "pocketsphinx-testdata"
DATA_DIR = Path("/usr/share/pocketsphinx/test/data")                      # Debian package pocketsphinx-testdata
COPYRIGHT_FILE = Path("/usr/share/doc/pocketsphinx-testdata/copyright")
MANIFEST_NAME = "real_dev.jsonl"
LICENCE_NAME = "real_dev_licence.json"
RAW_SR = 16000                          # the package's .raw files: headerless 16 kHz mono int16 little-endian
VERSION = 1

# (subfolder, transcription file, what it is) for the Sphinx-style "<s> words </s> (utt_id)" lists
_TRANSCRIBED = (("librivox", "transcription", "LibriVox reading of Jane Austen, Sense and Sensibility, ch. 1"),
                ("cards", "cards.transcription", "playing-card phrases"))
_GOFORWARD = ("goforward.raw", "goforward.gram", "move")
_LINE = re.compile(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$")


class RealDevUnavailable(ValueError):
    """The Debian package with the recordings is not installed."""


def available(data_dir: Path = DATA_DIR) -> bool:
    return (data_dir / "librivox").is_dir() and (data_dir / "cards").is_dir()


def parse_transcription(text: str) -> dict[str, str]:
    """Sphinx transcription lines ``<s> ten of clubs </s> (001)`` -> {"001": "ten of clubs"}."""
    out = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and m.group(1).strip():
            out[m.group(2).strip()] = m.group(1).strip()
    return out


def jsgf_rule(text: str, rule: str) -> str:
    """The body of a plain (alternative-free) public JSGF rule: ``public <move> = go forward ten meters;``."""
    m = re.search(r"public\s+<" + re.escape(rule) + r">\s*=\s*([^;]*);", text)
    if not m or re.search(r"[<>|\[\]()]", m.group(1)):
        raise ValueError(f"no plain JSGF rule <{rule}>")
    return " ".join(m.group(1).split())


def transcript(raw: str) -> str:
    """Project transcript: numbers written as words, then :func:`dld_core.text.normalize_text`."""
    return normalize_text(expand_numbers(raw))


def licence_info(copyright_file: Path = COPYRIGHT_FILE) -> dict:
    """The package's licence for its files (the ``Files: *`` stanza of the DEP-5 copyright file)."""
    text = copyright_file.read_text(encoding="utf-8", errors="replace")
    stanza = next((s for s in re.split(r"\n\s*\n", text) if re.search(r"^Files:\s*\*\s*$", s, re.M)), "")
    lic = re.search(r"^License:\s*(\S+)", stanza, re.M)
    holders = re.search(r"^Copyright:\s*(.*(?:\n[ \t]+.*)*)", stanza, re.M)
    return {
        "licence": lic.group(1) if lic else None,
        "copyright": " ".join(holders.group(1).split()) if holders else None,
        "copyright_file": str(copyright_file),
        "copyright_file_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def _items(data_dir: Path) -> list[dict]:
    items = []
    for sub, tfile, what in _TRANSCRIBED:
        trans = parse_transcription((data_dir / sub / tfile).read_text(encoding="utf-8", errors="replace"))
        for utt, words in sorted(trans.items()):
            src = data_dir / sub / f"{utt}.wav"
            if src.exists():
                items.append({"id": f"{sub}_{utt}", "src": src, "raw_text": words, "set": sub, "what": what,
                              "transcript_from": f"{sub}/{tfile}"})
    raw, gram, rule = _GOFORWARD
    if (data_dir / raw).exists() and (data_dir / gram).exists():
        words = jsgf_rule((data_dir / gram).read_text(encoding="utf-8", errors="replace"), rule)
        items.append({"id": "goforward", "src": data_dir / raw, "raw_text": words, "set": "goforward",
                      "what": "robot command", "transcript_from": f"{gram} <{rule}> (asserted by upstream tests)"})
    return items


def _load(src: Path) -> np.ndarray:
    if src.suffix == ".raw":
        x = np.fromfile(src, dtype="<i2").astype(np.float32) / 32768.0
        sr = RAW_SR
    else:
        y, sr = sf.read(src, dtype="float32", always_2d=True)
        x = y.mean(axis=1)
    x = resample(x, sr, SR)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (0.999 / peak) if peak > 0.999 else x


def build_real_dev(out_dir: str | Path, data_dir: str | Path = DATA_DIR,
                   copyright_file: str | Path = COPYRIGHT_FILE) -> Path:
    """Build the real-speech dev set in ``out_dir``; returns the manifest path (``out_dir/real_dev.jsonl``).

    Deterministic: the same package gives byte-identical wav files and manifest."""
    data_dir, out = Path(data_dir), Path(out_dir)
    if not available(data_dir):
        raise RealDevUnavailable(f"{data_dir} not found: install the Debian package {PACKAGE}")
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for it in _items(data_dir):
        x = _load(it["src"])
        dst = out / "audio" / f"{it['id']}.wav"
        sf.write(dst, x, SR, subtype="PCM_16")
        rows.append({"audio_filepath": f"audio/{dst.name}", "text": transcript(it["raw_text"]),
                     "duration": round(x.size / SR, 4), "source": f"{PACKAGE}:{it['src'].relative_to(data_dir)}",
                     "set": it["set"]})
    if not rows:
        raise RealDevUnavailable(f"no transcribed recordings found under {data_dir}")
    manifest = out / MANIFEST_NAME
    write_manifest(manifest, rows)
    info = {
        "what": "real-speech dev set: the transcribed recordings of Debian's pocketsphinx-testdata",
        "version": VERSION, "package": PACKAGE, "data_dir": str(data_dir),
        **licence_info(Path(copyright_file)),
        "notes": "The package's copyright file covers all its files (Files: *) with the licence above. "
                 "The librivox clips are LibriVox recordings, which LibriVox releases into the public domain.",
        "utterances": len(rows), "seconds": round(sum(r["duration"] for r in rows), 2),
        "per_set": {s: sum(r["set"] == s for r in rows) for s in dict.fromkeys(r["set"] for r in rows)},
        "transcripts": {it["id"]: it["transcript_from"] for it in _items(data_dir)},
        "left_out": {"numbers.raw, something.raw": "no transcript shipped",
                     "tidigits/": "excerpt of the LDC TIDIGITS corpus (licence not the package's)"},
        "normaliser": "dld_core.text.normalize_text (digits written as words first)",
        "manifest": MANIFEST_NAME, "sample_rate": SR, "audio_format": "wav PCM_16 mono",
    }
    (out / LICENCE_NAME).write_text(json.dumps(info, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:   # pragma: no cover - thin wrapper
    import argparse
    ap = argparse.ArgumentParser(description="build the pocketsphinx-testdata real-speech dev set")
    ap.add_argument("--out", default="corpus/real_dev")
    args = ap.parse_args(argv)
    try:
        path = build_real_dev(args.out)
    except RealDevUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
