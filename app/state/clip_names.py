"""The names people read for sample clips: "Synthetic voice (Flite, Kal)", "Recorded digit: zero (speaker
Nicolas)" — made from a manifest row's "title" or "source", never a file name, voice id or licence text."""
from __future__ import annotations

import re

_ENGINES = {"flite": "Flite", "festival": "Festival", "espeak": "eSpeak", "piper": "Piper"}
_EFFECTS = {"pink_noise": "with background noise", "white_noise": "with background noise", "noise": "with noise",
            "reverb": "in a reverberant room", "telephone": "over a telephone line"}
_ARCTIC_SPEAKERS = {"awb", "bdl", "clb", "jmk", "ksp", "rms", "slt"}      # CMU ARCTIC speakers go by initials
_LANGUAGES = {"en-gb": "British English", "en-gb-x-rp": "British English", "en-us": "American English",
              "en-029": "Caribbean English", "en-sc": "Scottish English", "en": "English"}


def _voice_name(voice: str) -> str:
    """A synthesizer voice id as a name: cmu_us_slt_arctic_hts -> SLT, kal16 / kal_diphone -> Kal,
    awb -> AWB, en-gb-x-rp+f3 -> British English, female."""
    voice = voice.strip()
    if "-" in voice or "+" in voice:                                  # eSpeak: language[+variant]
        lang, _, variant = voice.partition("+")
        sex = {"f": "female", "m": "male"}.get(variant[:1].lower(), "")
        return ", ".join(x for x in (_LANGUAGES.get(lang.lower(), lang), sex) if x)
    v = re.sub(r"^cmu_[a-z]+_|_arctic.*$|_diphone$|_hts$|\d+$", "", voice)
    return v.upper() if v.lower() in _ARCTIC_SPEAKERS else v.capitalize()


def sample_title(row: dict) -> str:
    """A human name for a sample clip: the manifest's "title" when it has one, else one made from its
    "source" ("Synthetic voice (Flite, Kal)", "Recorded digit: zero (speaker Nicolas)"); never a file name,
    voice id or licence text."""
    title = str(row.get("title") or "").strip()
    if title:
        return title
    src, text = str(row.get("source") or "").strip(), str(row.get("text", "")).strip()
    if src.upper().startswith("FSDD"):
        parts = src.split()
        speaker = parts[1].strip("(;,").capitalize() if len(parts) > 1 else ""
        return f"Recorded digit: {text}" + (f" (speaker {speaker})" if speaker else "")
    engine, sep, rest = src.partition(":")
    if sep and engine.lower() in _ENGINES:
        voice, _, aug = rest.partition(", augmented:")
        held_out = "held-out" in voice
        name = _voice_name(voice.split("(")[0])
        effect = next((e for k, e in _EFFECTS.items() if k in aug), "with effects" if aug.strip() else "")
        return (f"Synthetic voice ({_ENGINES[engine.lower()]}, {name}{'; not heard in training' if held_out else ''})"
                + (f", {effect}" if effect else ""))
    return "Sample clip"


def sample_label(row: dict) -> str:
    """What the sample picker shows: the clip's human name, the whole sentence (never cut) and its length."""
    title, text = sample_title(row), str(row.get("text", "")).strip()
    said = "" if not text or text.lower() in title.lower() else f" — “{text}”"
    dur = row.get("duration")
    return f"{title}{said}" + (f" · {dur:.1f} s" if isinstance(dur, (int, float)) else "")
