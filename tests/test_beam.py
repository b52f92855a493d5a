"""Lexicon + word-LM beam decoding (dld_core.decode.make_decoder("beam")), its files (decoder_files,
lm_build, decoder_params) and their tuning (decoder_tuning)."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from dld_core import decoder_files, decoder_params, decoder_tuning, lm_build
from dld_core.config import CHAR_VOCAB
from dld_core.decode import DECODERS, beam_available, beam_status, greedy_decode, make_decoder
from dld_core.decoder_files import DecoderFilesError
from dld_core.tokenizer import CharTokenizer

VOCAB = list(CHAR_VOCAB)
TOK = CharTokenizer(VOCAB)
needs_flashlight = pytest.mark.skipif(not beam_available(), reason="flashlight-text is not installed")

# a tiny lexicon whose words start with many letters, so <unk> pieces can spell most strings
WORDS = {"hello": -2.0, "help": -2.5, "world": -2.0, "word": -2.5, "cat": -3.0, "bat": -3.0, "the": -1.0,
         "a": -1.5, "xylophone": -4.0, "zebra": -4.0, "yes": -3.0, "quiet": -4.0, "jam": -4.0, "of": -1.5}


def in_threads(work, n: int = 4) -> list[Exception]:
    """Run `work` in n threads started together (a barrier); the exceptions they raised."""
    start, errors = threading.Barrier(n), []

    def run():
        start.wait()
        try:
            work()
        except Exception as exc:                                        # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def emission(frames: list) -> torch.Tensor:
    """[T, V] log-probs. Each frame is a string of tokens ('_' = blank, ' ' = space) that share the
    probability mass equally, or a dict {token: prob}; the rest of the mass (1e-4) is spread evenly."""
    rows = []
    for f in frames:
        spec = f if isinstance(f, dict) else {c: 1.0 / len(f) for c in f}
        p = torch.full((len(VOCAB),), 1e-4 / len(VOCAB))
        for c, q in spec.items():
            p[0 if c == "_" else VOCAB.index(c)] += q * (1 - 1e-4)
        rows.append(p / p.sum())
    return torch.stack(rows).log()


def path(text: str) -> torch.Tensor:
    """A clean emission for `text`: each character one frame, blanks between and around."""
    frames = ["_"]
    for c in text:
        frames += [c, "_"]
    return emission(frames)


@pytest.fixture
def tiny_files(tmp_path) -> Path:
    return decoder_files.write_decoder_files(tmp_path / "tiny", WORDS)


def beam(folder, **kw):
    params = {"lm_weight": 1.0, "word_score": 0.0, "unk_score": -5.0, "beam_size": 16, **kw}
    return make_decoder("beam", VOCAB, files=folder, **params)


# ------------------------------------------------------------------------------------------------
def test_spelling_in_ctc_tokens(tiny_files):
    assert decoder_files.spell("hello") == ["h", "e", "l", "l", "o", "|"]
    assert decoder_files.spell("don't") == ["d", "o", "n", "'", "t", "|"]
    for bad in ("Hello", "a1", "two words", "", "'tis", "x-ray"):
        assert decoder_files.spell(bad) is None
    assert decoder_files.spell("hello", tokens=["<blank>", " ", "h", "e", "l"]) is None       # 'o' is not a token
    lines = (tiny_files / decoder_files.LEXICON_FILE).read_text().splitlines()
    assert "hello\th e l l o |" in lines and len(lines) == len(WORDS)
    assert (tiny_files / decoder_files.WORDS_FILE).read_text().splitlines()[-1] == "<unk>"
    files = decoder_files.load_decoder_files(tiny_files)
    assert files.words == sorted(WORDS) and files.order == 1
    assert files.unigrams["hello"] == pytest.approx(-2.0)


def test_greedy_factory_equals_greedy_decode():
    torch.manual_seed(0)
    lp = torch.randn(3, 40, len(VOCAB)).log_softmax(-1)
    lengths = torch.tensor([40, 25, 3])
    dec = make_decoder("greedy", VOCAB)
    assert dec(lp, lengths) == greedy_decode(lp, lengths, TOK)
    assert dec(lp) == greedy_decode(lp, None, TOK)
    assert DECODERS == ("greedy", "beam")


def test_unknown_decoder_kind():
    with pytest.raises(ValueError, match="unknown decoder 'viterbi'"):
        make_decoder("viterbi", VOCAB)
    with pytest.raises(TypeError):
        make_decoder("beam", VOCAB, beam_width=3)


@needs_flashlight
def test_beam_fixes_a_greedy_misspelling(tiny_files):
    # "hel?lo": the second l leans to 'l' over blank, so greedy collapses it into "helo"
    lp = emission(["_", "h", "_", "e", "_", "l", {"l": 0.55, "_": 0.45}, "l", "o", "_", " ",
                   "w", "_", "o", "r", "l", "_", "d", "_"])
    assert greedy_decode(lp, None, TOK) == ["helo world"]
    assert beam(tiny_files)(lp) == ["hello world"]


@needs_flashlight
def test_unk_path_spells_an_out_of_lexicon_word(tiny_files):
    dec = beam(tiny_files)
    assert dec(path("the xyz of a jam")) == ["the xyz of a jam"]
    assert dec(path("hello")) == ["hello"]
    # a cheap <unk> path keeps an unknown tail on its lexicon-word stem: one word, not "hello o"
    assert beam(tiny_files, unk_score=0.0, lm_weight=0.0)(path("helloo")) == ["helloo"]
    # without the <unk> path the out-of-lexicon word cannot come out
    assert "xyz" not in beam(tiny_files, unk_score=float("-inf"))(path("the xyz of a jam"))[0]


@needs_flashlight
def test_lm_prior_breaks_an_acoustic_tie(tmp_path):
    tie = emission(["_", {"c": 0.5, "b": 0.5}, "_", "a", "_", "t", "_"])
    cat = decoder_files.write_decoder_files(tmp_path / "cat", {**WORDS, "cat": -2.0, "bat": -4.0})
    bat = decoder_files.write_decoder_files(tmp_path / "bat", {**WORDS, "cat": -4.0, "bat": -2.0})
    assert beam(cat)(tie) == ["cat"]
    assert beam(bat)(tie) == ["bat"]
    assert beam(cat, lm_weight=0.0)(tie)[0] in ("cat", "bat")        # no LM: either, decided by acoustics only


@needs_flashlight
def test_bigram_context_changes_the_choice(tmp_path):
    """With a bigram LM the previous word decides between two tied words."""
    uni = {**WORDS, "cat": -3.0, "bat": -3.0}
    bigrams = {("the", "bat"): -0.5, ("the", "cat"): -3.0, ("a", "cat"): -0.5, ("a", "bat"): -3.0}
    folder = decoder_files.write_decoder_files(tmp_path / "bi", uni, bigrams, {"the": -0.3, "a": -0.3})
    assert decoder_files.load_decoder_files(folder).order == 2
    tie = ["_", {"c": 0.5, "b": 0.5}, "_", "a", "_", "t", "_"]
    the = ["_", "t", "_", "h", "_", "e", "_", " "]
    a = ["_", "a", "_", " "]
    dec = beam(folder, lm_weight=2.0)
    assert dec(emission(the + tie)) == ["the bat"]
    assert dec(emission(a + tie)) == ["a cat"]


@needs_flashlight
def test_beam_batch_lengths_cache_and_threads(tiny_files):
    dec = beam(tiny_files)
    assert beam(tiny_files) is dec                                    # built once, shared
    a, b = path("hello world"), path("yes")
    batch = torch.full((2, a.shape[0], len(VOCAB)), -30.0)
    batch[0], batch[1, : b.shape[0]] = a, b
    assert dec(batch, torch.tensor([a.shape[0], b.shape[0]])) == ["hello world", "yes"]
    assert dec(batch[:, :0], torch.tensor([0, 0])) == ["", ""]
    expected = dec(a)
    out = []
    errors = in_threads(lambda: [out.append(dec(a)) for _ in range(20)])
    assert not errors and all(o == expected for o in out) and len(out) == 80


def _small_recipe(tmp_path: Path, order: int = 2) -> dict:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\nthe bat flew over the cat\nDon't panic, the cat is fine.\n" * 3)
    held = tmp_path / "held.jsonl"
    held.write_text(json.dumps({"audio_filepath": "x.wav", "text": "the bat flew over the cat"}) + "\n")
    return lm_build.default_recipe(order=order, sources=["numbers"], numbers=300, text=[text], exclude=[held])


def test_build_is_reproducible(tmp_path):
    recipe = _small_recipe(tmp_path)
    a = lm_build.build_decoder_files(recipe, root=tmp_path / "a")
    b = lm_build.build_decoder_files(recipe, root=tmp_path / "b", force=True)
    assert a.name == b.name == decoder_files.recipe_key(recipe)
    for name in decoder_files.DATA_FILES + (decoder_files.INFO_FILE,):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    files = decoder_files.load_decoder_files(a)
    assert files.order == 2 and {"cat", "don't", "ninety", "hundred"} <= set(files.words)
    assert files.info["stats"]["excluded_sentences"] == 3                 # the held-out sentence never reaches the LM
    assert ("the", "cat") in files.bigrams and ("flew", "over") not in files.bigrams
    assert lm_build.build_decoder_files(recipe, root=tmp_path / "a") == a        # cached: reused as is
    assert decoder_files.recipe_key(_small_recipe(tmp_path, order=1)) != decoder_files.recipe_key(recipe)


def test_concurrent_builds_build_once(tmp_path, monkeypatch):
    """Builders of the same key (pytest workers, the app beside a CLI run) wait on one lock: one builds, the rest
    reuse its folder; none sees a half-built folder or fails on the rename."""
    recipe = _small_recipe(tmp_path)
    built, real_build = [], lm_build._build
    monkeypatch.setattr(lm_build, "_build", lambda *a, **k: built.append(1) or real_build(*a, **k))
    results = []
    errors = in_threads(lambda: results.append(lm_build.build_decoder_files(recipe, root=tmp_path / "root")))
    assert errors == [] and len(built) == 1
    assert len(set(results)) == 1 and decoder_files.verify_decoder_files(results[0])


def _one_line_error(exc_info, path: Path):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert str(path) in msg and "python -m dld_core build-lm" in msg
    assert isinstance(exc_info.value, ValueError)


@pytest.mark.parametrize("damage", ["missing_lexicon", "corrupt_lm", "truncated_words", "bad_info", "missing_info"])
def test_missing_or_corrupt_files(tmp_path, damage):
    folder = decoder_files.write_decoder_files(tmp_path / f"d_{damage}", WORDS)
    target = {"missing_lexicon": decoder_files.LEXICON_FILE, "corrupt_lm": decoder_files.LM_FILE,
              "truncated_words": decoder_files.WORDS_FILE, "bad_info": decoder_files.INFO_FILE,
              "missing_info": decoder_files.INFO_FILE}[damage]
    path = folder / target
    if damage.startswith("missing"):
        path.unlink()
    elif damage == "corrupt_lm":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
    elif damage == "truncated_words":
        path.write_bytes(path.read_bytes()[:7])
    else:
        path.write_text("{not json")
    with pytest.raises(DecoderFilesError) as exc_info:
        decoder_files.load_decoder_files(folder)
    _one_line_error(exc_info, path)
    if beam_available():
        with pytest.raises(DecoderFilesError) as exc_info:
            make_decoder("beam", VOCAB, files=folder)
        _one_line_error(exc_info, path)


def test_corrupt_lm_content_with_matching_checksum(tmp_path):
    """A file that passes the checksum but does not parse (hand-edited build.json) is still one line."""
    folder = decoder_files.write_decoder_files(tmp_path / "d", WORDS)
    arpa = folder / decoder_files.LM_FILE
    arpa.write_text(arpa.read_text().replace("\\end\\", ""))
    info = json.loads((folder / decoder_files.INFO_FILE).read_text())
    import hashlib
    info["files"][decoder_files.LM_FILE]["sha256"] = hashlib.sha256(arpa.read_bytes()).hexdigest()
    (folder / decoder_files.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(DecoderFilesError) as exc_info:
        decoder_files.load_decoder_files(folder)
    _one_line_error(exc_info, arpa)


def test_beam_status_reports_why(tmp_path, monkeypatch):
    folder = decoder_files.write_decoder_files(tmp_path / "ok", WORDS)
    monkeypatch.setenv(decoder_params.DIR_ENV, str(folder))
    ok, why = beam_status()
    assert (ok, why) == (True, "") if beam_available() else (not ok and "flashlight" in why)
    shutil.rmtree(folder)
    monkeypatch.setenv(decoder_params.DIR_ENV, str(tmp_path / "gone"))
    ok, why = beam_status()
    assert not ok and "\n" not in why
    if beam_available():
        assert str(tmp_path / "gone") in why and "python -m dld_core build-lm" in why


def test_corrupt_params_file(tmp_path):
    bad = tmp_path / "decoder_params.json"
    bad.write_text("[1, 2")
    with pytest.raises(DecoderFilesError) as exc_info:
        decoder_params.read_params(bad)
    assert str(bad) in str(exc_info.value) and "\n" not in str(exc_info.value)


def test_committed_params_are_valid():
    data = decoder_params.read_params()
    assert set(decoder_params.DEFAULT_PARAMS) <= set(data["params"])
    if data.get("recipe") is not None:
        assert data["key"] == decoder_files.recipe_key(data["recipe"])
        assert not data["recipe"]["exclude"]                              # rebuildable anywhere
        tuned = data["tuned"]
        assert "test" not in Path(tuned["manifest"]).name                 # tuned on validation, never test
        chosen = [r for r in tuned["grid"] if r["order"] == data["recipe"]["order"]
                  and all(r[k] == data["params"][k] for k in ("lm_weight", "word_score", "unk_score", "beam_size"))]
        assert chosen and tuned["best_wer"] == chosen[0]["wer"] <= tuned["greedy_wer"]


@needs_flashlight
def test_tune_on_a_tiny_model(tmp_path, tiny_model, tiny_corpus):
    from dld_core.checkpoint import save_checkpoint
    ckpt = save_checkpoint(tmp_path / "ckpt", tiny_model, recipe="teacher")
    recipes = {1: lm_build.default_recipe(order=1, sources=["numbers"], numbers=50)}
    grid = {"order": [1], "lm_weight": [0.0, 1.0], "word_score": [0.0], "unk_score": [-10.0], "beam_size": [4, 2]}
    out = tmp_path / "params.json"
    res = decoder_tuning.tune_decoder(ckpt, tiny_corpus["valid"], grid, out=out, recipes=recipes,
                                      root=tmp_path / "cache", log=lambda *_: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert len(res["tuned"]["grid"]) == 3 and res["params"]["beam_size"] in (2, 4)
    assert res["tuned"]["best_wer"] == min(r["wer"] for r in res["tuned"]["grid"])
    assert res["key"] == decoder_files.recipe_key(res["recipe"])


def test_cli_build_lm(tmp_path, capsys):
    from dld_core.cli import main
    text = tmp_path / "t.txt"
    text.write_text("a small text\n")
    rc = main(["build-lm", "--sources", "numbers", "--numbers", "100", "--text", str(text), "--order", "1",
               "--root", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert rc == 0
    folder = Path(out.strip().splitlines()[-1].split()[-1])
    assert folder.parent == tmp_path / "cache" and "small" in decoder_files.load_decoder_files(folder).words


def test_cli_tune_hands_the_lm_recipes_to_tune_decoder(tmp_path, capsys, monkeypatch):
    """`python -m dld_core tune`: one recipe per order, never seeing the tuning manifest or --exclude;
    the parameters go to decoder_params.json unless --out says otherwise ('' = nowhere)."""
    from dld_core.cli import main
    valid, test, text = (tmp_path / name for name in ("valid.jsonl", "test.jsonl", "t.txt"))
    for path in (valid, test, text):
        path.write_text('{"text": "a b"}\n')
    calls = []

    def fake_tune(checkpoint, manifest, grid, **kw):
        calls.append({"checkpoint": checkpoint, "manifest": manifest, "grid": grid, **kw})
        return {"params": {"lm_weight": 1.0}, "tuned": {"greedy_wer": 0.5, "best_wer": 0.25}}
    monkeypatch.setattr(decoder_tuning, "tune_decoder", fake_tune)
    argv = ["tune", "--checkpoint", "CKPT", "--manifest", str(valid), "--exclude", str(test), "--text", str(text),
            "--grid", '{"order": [2], "lm_weight": [0.5]}', "--limit", "3", "--max-ms", "0"]
    assert main(argv) == 0 and main(argv + ["--out", ""]) == 0
    first, nowhere = calls
    assert json.loads(capsys.readouterr().out.split("\n}\n")[0] + "}")["best_wer"] == 0.25
    assert first["out"] == decoder_params.PARAMS_PATH and nowhere["out"] is None
    assert first["grid"] == {"order": [2], "lm_weight": [0.5]} and first["limit"] == 3
    assert first["max_ms_per_audio_s"] is None and first["min_gain"] == 0.01
    assert first["recipes"] == {2: lm_build.default_recipe(order=2, text=[text], exclude=[valid, test])}


def test_bench_reports_decoding_time(tiny_model, tmp_path, monkeypatch):
    from dld_core.bench import decode_ms
    monkeypatch.setenv(decoder_params.DIR_ENV, str(decoder_files.write_decoder_files(tmp_path / "tiny", WORDS)))
    res = decode_ms(tiny_model, seconds=2.0, repeats=1)
    assert res["frames"] > 0 and res["greedy_ms"] > 0
    assert res["beam_ms"] > 0 if beam_available() else "flashlight" in res["beam_error"]
    monkeypatch.setenv(decoder_params.DIR_ENV, str(tmp_path / "missing"))
    assert "build-lm" in decode_ms(tiny_model, seconds=1.0, repeats=1).get("beam_error", "build-lm")


@pytest.mark.slow
def test_default_lexicon_from_the_real_sources(tmp_path):
    """The full default build (wordfreq + KJV + WordNet + numbers; ~15 s): every line is a word spelled in
    CTC tokens, and it knows common words, contractions, number words and KJV words."""
    from dld_core.synth import text as textsrc
    if not textsrc.KJV_DATA.exists() or not getattr(textsrc, "WORDNET_DIR", textsrc.KJV_DATA).exists():
        pytest.skip("needs Debian's bible-kjv-text and wordnet-base")
    folder = lm_build.build_decoder_files(lm_build.default_recipe(order=1), root=tmp_path)
    files = decoder_files.load_decoder_files(folder)
    words = set(files.words)
    assert 50000 < len(words) < 200000
    assert {"the", "i", "a", "don't", "seventy", "nineteenth", "thou", "begat", "computer"} <= words
    assert all(decoder_files.spell(w) for w in files.words)
    assert files.unigrams["the"] > files.unigrams["computer"] > files.unigrams[decoder_files.UNK]
    assert sum((folder / n).stat().st_size for n in decoder_files.DATA_FILES) < 20e6
