"""The beam decoder's files: one folder per build recipe, written and read here.

A folder ``$DLD_DECODER_CACHE/<key>/`` (default root ``~/.cache/dld_studio/decoder``; the key is a hash of
the build recipe, :func:`recipe_key`) holds:

* ``lexicon.txt``  one word per line, spelled in the model's CTC tokens and closed by the word
                   delimiter: ``hello\\th e l l o |`` (``" "`` is written ``|`` for flashlight);
* ``words.txt``    the decoder's word list (lexicon order, then ``<unk>``): the LM's word indices;
* ``lm.arpa``      a word n-gram LM in ARPA format (log10), unigram (order 1) or bigram (order 2);
* ``build.json``   the recipe, its key, sizes and SHA-256 of the three files (checked on load).

:func:`write_decoder_files` writes a folder atomically from log10 probabilities (``dld_core.lm_build``
estimates them; tests write tiny ones); :func:`load_decoder_files` verifies and parses one. Any problem
is a :class:`DecoderFilesError` naming the file and the command that rebuilds it.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .config import CHAR_VOCAB
from .paths import user_cache

RECIPE_VERSION = 1
REBUILD_COMMAND = "python -m dld_core build-lm"
CACHE_ENV = "DLD_DECODER_CACHE"          # root folder of the built decoder files

LEXICON_FILE, WORDS_FILE, LM_FILE, INFO_FILE = "lexicon.txt", "words.txt", "lm.arpa", "build.json"
DATA_FILES = (LEXICON_FILE, WORDS_FILE, LM_FILE)
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
WORD_DELIMITER = "|"
MAX_FILE_BYTES = 256 << 20

_WORD_RE = re.compile(r"^[a-z]+(?:'[a-z]+)*$")


class DecoderFilesError(ValueError):
    """A missing or corrupt lexicon / LM / parameter file; the message is one line naming the file
    and the command that rebuilds it."""


def files_error(path, problem: str, fix: str = f"rebuild it with `{REBUILD_COMMAND}`") -> DecoderFilesError:
    """The one-line error "<path>: <problem>; <fix>"."""
    text = f"{path}: {problem}; {fix}"
    return DecoderFilesError(" ".join(text.split()))


# --------------------------------------------------------------------------------------------
# recipe key, cache folder
def recipe_key(recipe: dict) -> str:
    """16 hex digits of SHA-256 over the recipe; text files count by content, not by path."""
    canon = json.loads(json.dumps(recipe))
    for name in ("text", "exclude"):
        canon[name] = [ref["sha256"] for ref in canon.get(name, [])]
    return hashlib.sha256(json.dumps(canon, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def cache_root() -> Path:
    return user_cache(CACHE_ENV, "decoder")


# --------------------------------------------------------------------------------------------
# lexicon spelling and the ARPA format
def spell(word: str, tokens: Sequence[str] = CHAR_VOCAB) -> Optional[list[str]]:
    """The word in CTC tokens, closed by the word delimiter ('hello' -> h e l l o |), or None when it
    is not a plain lowercase word or uses a character the tokens lack."""
    if not isinstance(word, str) or not _WORD_RE.match(word) or len(word) > 48:
        return None
    have = set(tokens)
    if any(c not in have for c in word):
        return None
    return list(word) + [WORD_DELIMITER]


def _fmt(x: float) -> str:
    return f"{x:.6f}"


def arpa_text(unigrams: dict[str, float], bigrams: dict, backoff: dict) -> str:
    order = 2 if bigrams else 1
    head = [BOS, EOS, UNK]
    rows = []
    for w in head + sorted(w for w in unigrams if w not in head):
        p = -99.0 if w == BOS else unigrams[w]
        row = f"{_fmt(p)}\t{w}"
        if order == 2:
            row += f"\t{_fmt(backoff.get(w, 0.0))}"
        rows.append(row)
    out = ["", "\\data\\", f"ngram 1={len(rows)}"]
    if order == 2:
        out.append(f"ngram 2={len(bigrams)}")
    out += ["", "\\1-grams:"] + rows + [""]
    if order == 2:
        out.append("\\2-grams:")
        out += [f"{_fmt(p)}\t{h} {w}" for (h, w), p in sorted(bigrams.items())]
        out.append("")
    out += ["\\end\\", ""]
    return "\n".join(out)


def parse_arpa(path: Path) -> tuple[dict, dict, dict, int]:
    """A unigram or bigram ARPA file -> (unigrams, bigrams, backoff, order), all log10."""
    unigrams, bigrams, backoff = {}, {}, {}
    counts, section, order = {}, None, 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise files_error(path, "LM is not readable ARPA text") from None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            if line == "\\data\\":
                section = "data"
            elif line == "\\end\\":
                section = "end"
            elif re.fullmatch(r"\\(\d)-grams:", line):
                section = int(line[1])
                if section not in counts:
                    raise ValueError
            elif section == "data":
                m = re.fullmatch(r"ngram (\d)=(\d+)", line)
                n, c = int(m.group(1)), int(m.group(2))
                counts[n] = c
                order = max(order, n)
            elif section == 1:
                parts = line.split("\t")
                p, w = float(parts[0]), parts[1]
                unigrams[w] = p
                if len(parts) > 2:
                    backoff[w] = float(parts[2])
            elif section == 2:
                p, rest = line.split("\t")[:2]
                h, w = rest.split(" ")
                bigrams[(h, w)] = float(p)
            else:
                raise ValueError
        except (ValueError, AttributeError, IndexError):
            raise files_error(path, f"LM line {lineno} is not valid ARPA") from None
    if section != "end" or order not in (1, 2) or counts.get(1) != len(unigrams) or counts.get(2, 0) != len(bigrams):
        raise files_error(path, "LM is truncated or not a unigram/bigram ARPA file")
    if any(not math.isfinite(v) for v in itertools.chain(unigrams.values(), bigrams.values(), backoff.values())):
        raise files_error(path, "LM holds a non-finite score")
    return unigrams, bigrams, backoff, order


# --------------------------------------------------------------------------------------------
# write
def write_decoder_files(folder: str | os.PathLike, unigrams: dict[str, float], bigrams: Optional[dict] = None,
                        backoff: Optional[dict] = None, tokens: Sequence[str] = CHAR_VOCAB,
                        recipe: Optional[dict] = None, stats: Optional[dict] = None) -> Path:
    """Write a decoder folder (lexicon, words, ARPA LM, build.json) from log10 probabilities: `unigrams`
    maps every word (plus optionally </s> and <unk>) to log10 p; `bigrams` {(h, w): log10 p} with
    `backoff` {h: log10 b} makes it a bigram LM. Words that cannot be spelled in `tokens` are dropped.
    Replaces the folder atomically. Also the way tests make tiny lexicons."""
    folder = Path(folder)
    bigrams, backoff = dict(bigrams or {}), dict(backoff or {})
    uni = {w: float(p) for w, p in unigrams.items() if w in (EOS, UNK) or spell(w, tokens)}
    uni.setdefault(EOS, -1.0)
    uni.setdefault(UNK, min(uni.values()) - 1.0)
    lexicon = sorted(w for w in uni if w not in (EOS, UNK, BOS))
    if not lexicon:
        raise ValueError("a decoder lexicon needs at least one word")
    files = {
        LEXICON_FILE: "".join(f"{w}\t{' '.join(spell(w, tokens))}\n" for w in lexicon).encode(),
        WORDS_FILE: "".join(f"{w}\n" for w in lexicon + [UNK]).encode(),
        LM_FILE: arpa_text(uni, bigrams, backoff).encode(),
    }
    recipe = recipe if recipe is not None else {"version": RECIPE_VERSION, "tokens": list(tokens), "custom": True,
                                                "order": 2 if bigrams else 1}
    info = {
        "format": "dld-studio-decoder-files", "key": recipe_key(recipe), "recipe": recipe,
        "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in files.items()},
        "stats": {"words": len(lexicon), "bigrams": len(bigrams), "order": 2 if bigrams else 1, **(stats or {})},
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        os.chmod(tmp, 0o755)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
            folder.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# --------------------------------------------------------------------------------------------
# read and verify
def _read_file(path: Path, what: str) -> bytes:
    if not path.exists():
        raise files_error(path, f"{what} is missing")
    if not path.is_file():
        raise files_error(path, f"{what} is not a regular file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise files_error(path, f"{what} is too large")
        return path.read_bytes()
    except OSError as exc:
        raise files_error(path, f"cannot read {what} ({exc.strerror or exc})") from None


def read_build_info(folder: str | os.PathLike) -> dict:
    if not Path(folder).exists():
        raise files_error(folder, "the beam decoder's lexicon and LM are not built",
                           f"build them with `{REBUILD_COMMAND}`")
    path = Path(folder) / INFO_FILE
    try:
        info = json.loads(_read_file(path, "decoder build info").decode("utf-8"))
        if not isinstance(info, dict) or not isinstance(info.get("files"), dict) or "recipe" not in info:
            raise ValueError
        for name in DATA_FILES:
            ref = info["files"][name]
            if not isinstance(ref.get("sha256"), str):
                raise ValueError
    except DecoderFilesError:
        raise
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise files_error(path, "decoder build info is corrupt (not the JSON that build-lm writes)") from None
    return info


def verify_decoder_files(folder: str | os.PathLike) -> dict:
    """Check that the folder holds the files its build.json names, byte for byte. Returns build.json."""
    folder = Path(folder)
    info = read_build_info(folder)
    for name in DATA_FILES:
        data = _read_file(folder / name, name)
        if hashlib.sha256(data).hexdigest() != info["files"][name]["sha256"]:
            raise files_error(folder / name, f"{name} is corrupt (its SHA-256 does not match {INFO_FILE})")
    return info


@dataclass
class DecoderFiles:
    """The parsed contents of a decoder folder."""
    folder: Path
    words: list[str]                         # lexicon words, in lexicon order (word index = position)
    tokens_used: set[str]                    # every token the lexicon spells with (incl. the delimiter)
    order: int
    unigrams: dict[str, float]               # log10 p(w), incl. </s> and <unk>
    bigrams: dict[tuple[str, str], float]
    backoff: dict[str, float]
    info: dict

    @property
    def lexicon_path(self) -> Path:
        return self.folder / LEXICON_FILE

    @property
    def words_path(self) -> Path:
        return self.folder / WORDS_FILE

    @property
    def lm_path(self) -> Path:
        return self.folder / LM_FILE


def load_decoder_files(folder: str | os.PathLike) -> DecoderFiles:
    """Verify and parse a decoder folder; any problem -> DecoderFilesError naming the file."""
    folder = Path(folder)
    info = verify_decoder_files(folder)
    tokens = set(info["recipe"].get("tokens", CHAR_VOCAB)) | {WORD_DELIMITER}
    lex_path = folder / LEXICON_FILE
    words, seen, used = [], set(), set()
    for lineno, line in enumerate(lex_path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) < 3 or parts[-1] != WORD_DELIMITER or "".join(parts[1:-1]) != parts[0] \
                or not _WORD_RE.match(parts[0]) or any(t not in tokens for t in parts[1:]) or parts[0] in seen:
            raise files_error(lex_path, f"lexicon line {lineno} is malformed")
        words.append(parts[0])
        seen.add(parts[0])
        used.update(parts[1:])
    if not words:
        raise files_error(lex_path, "lexicon is empty")
    wpath = folder / WORDS_FILE
    if wpath.read_text(encoding="utf-8").split("\n") != words + [UNK, ""]:
        raise files_error(wpath, "word list does not match the lexicon")
    unigrams, bigrams, backoff, order = parse_arpa(folder / LM_FILE)
    missing = next((w for w in words if w not in unigrams), None)
    if missing is not None or UNK not in unigrams or EOS not in unigrams:
        raise files_error(folder / LM_FILE, f"LM lacks the word {missing or UNK!r}")
    return DecoderFiles(folder, words, used, order, unigrams, bigrams, backoff, info)
