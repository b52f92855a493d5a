"""Whisper's text decoder on the gated whisper encoder (dld_core/families/whisper_decoder.py and
whisper_decoding.py): the pinned tiny.en transcribes the sample clips, the KV cache and beam search agree with
the plain computations, the length guard and the repetition stop end runaway decodes, and the decoder and
tokenizer readers refuse bad files with one-line errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dld_core import pretrained
from dld_core.families import whisper as W
from dld_core.families.whisper_decoder import (HALF_LOGITS_MAX_ROWS, DecoderState, TextDecoder, load_text_decoder,
                                              load_tokenizer)
from dld_core.families.whisper_decoding import (DecodeOptions, WhisperSeq2Seq, beam_search, greedy_decode,
                                                repeat_cut, spoken_text)
from dld_core.metrics import wer
from dld_core.safe_io import CheckpointError
from dld_core.text import normalize_text
from tests.helpers import ct2_bytes

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples"


@pytest.fixture(scope="module")
def whisper() -> WhisperSeq2Seq:
    return WhisperSeq2Seq.from_pretrained()


def sample_clips() -> tuple[list[dict], list[np.ndarray]]:
    rows = [json.loads(line) for line in (SAMPLES / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return rows, [sf.read(SAMPLES / r["audio_filepath"], dtype="float32")[0] for r in rows]


def texts(hyps) -> list[str]:
    return [spoken_text(h.text) for h in hyps]


# ------------------------------------------------------------------------------- the pretrained model

@pytest.fixture(scope="module")
def sample_results(whisper):
    rows, wavs = sample_clips()
    return rows, wavs, {mode: whisper.transcribe(wavs, mode=mode) for mode in ("padded", "clip")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["padded", "clip"])
def test_pretrained_whisper_transcribes_the_samples(sample_results, mode):
    rows, wavs, results = sample_results
    hyps = results[mode]
    synth = [i for i, r in enumerate(rows) if r["audio_filepath"].startswith("synth_")]
    digits = [i for i, r in enumerate(rows) if r["audio_filepath"].startswith("fsdd_")]
    assert len(synth) == 7 and len(digits) == 3
    # measured (greedy, full depth, zero padding): the 7 synthetic clips 27.5% WER padded, 19.6% clip alone
    assert wer([rows[i]["text"] for i in synth], [texts(hyps)[i] for i in synth]) < 0.35
    assert all(hyps[i].stop == "eot" for i in synth)
    assert normalize_text(spoken_text(hyps[0].text)) == rows[0]["text"]           # the easiest clip is exact
    exact = [normalize_text(texts(hyps)[i]) == rows[i]["text"] for i in digits]
    if mode == "padded":     # measured: "three." and "7" exact; "zero" (0.36 s) comes out as "Thank you."
        assert sum(exact) >= 2
    else:                    # the FSDD words (0.36-0.49 s) are too short for the clip alone: "." and "7, 7, 7, 7,"
        for i in digits:     # ... but the guards bound what comes out
            limit = DecodeOptions().max_tokens(len(wavs[i]) / 16000, cap=446)
            assert len(hyps[i].tokens) <= limit and hyps[i].stop in ("eot", "repeat")


def test_a_batch_equals_each_clip_alone(whisper, sample_results):
    rows, wavs, results = sample_results
    for mode in ("padded", "clip"):
        alone = [whisper.transcribe([wavs[i]], mode=mode)[0].tokens for i in (0, 3, 7)]
        assert [results[mode][i].tokens for i in (0, 3, 7)] == alone, mode


def test_kv_cached_greedy_equals_uncached(whisper):
    _, wavs = sample_clips()
    memory = whisper.encode([wavs[0], wavs[5]], mode="clip")
    cached = greedy_decode(whisper.decoder, whisper.tokenizer, memory)
    uncached = greedy_decode(whisper.decoder, whisper.tokenizer, memory, cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in uncached]
    assert all(len(h.tokens) > 5 for h in cached)
    for a, b in zip(cached, uncached):
        assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-3)


def test_cached_logits_equal_a_full_forward(whisper):
    torch.manual_seed(0)
    audio = torch.randn(2, 30, whisper.decoder.ln.normalized_shape[0])
    tokens = torch.tensor([[50257, 50362, 440, 1049, 13], [50257, 50362, 383, 262, 11]])
    with torch.no_grad():
        full = whisper.decoder(tokens, whisper.decoder.start(audio), cache=False)
        state = whisper.decoder.start(audio)
        steps = [whisper.decoder(tokens[:, :2], state)] + [whisper.decoder(tokens[:, i: i + 1], state)
                                                            for i in range(2, 5)]
    assert state.offset == 5
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-4, rtol=1e-4)


def test_half_logits_for_few_rows_only(whisper):
    """half_logits (DecodeOptions' default) rounds the output projection to float16 for fewer than
    HALF_LOGITS_MAX_ROWS rows (greedy), and leaves a 5-beam search's rows in float32."""
    torch.manual_seed(0)
    decoder = whisper.decoder
    audio = torch.randn(1, 30, decoder.ln.normalized_shape[0])
    for rows in (1, HALF_LOGITS_MAX_ROWS):
        tokens = torch.tensor([[50257, 50362, 440]] * rows)
        with torch.no_grad():
            exact = decoder(tokens, decoder.start(audio), cache=False, last_only=True)
            half = decoder(tokens, decoder.start(audio), cache=False, last_only=True, half_logits=True)
        if rows < HALF_LOGITS_MAX_ROWS:
            assert not torch.equal(half, exact) and torch.allclose(half, exact, atol=0.05)
            assert torch.equal(half.argmax(-1), exact.argmax(-1))
        else:
            assert torch.equal(half, exact)
    assert DecodeOptions().half_logits


def test_beam_one_equals_greedy_and_beam_five_works(whisper, sample_results):
    rows, wavs, results = sample_results
    memory = whisper.encode([wavs[i] for i in (0, 1, 2, 8)], mode="clip")
    greedy = greedy_decode(whisper.decoder, whisper.tokenizer, memory)
    beam1 = beam_search(whisper.decoder, whisper.tokenizer, memory, DecodeOptions(beam_size=1))
    assert [h.tokens for h in beam1] == [h.tokens for h in greedy]
    assert [h.stop for h in beam1] == [h.stop for h in greedy]
    beam5 = beam_search(whisper.decoder, whisper.tokenizer, memory, DecodeOptions(beam_size=5))
    assert normalize_text(spoken_text(beam5[0].text)) == rows[0]["text"]
    assert all(h.stop == "eot" for h in beam5[:3])


def test_the_length_guard_stops_a_forced_runaway(whisper):
    _, wavs = sample_clips()
    memory = whisper.encode([wavs[0]], mode="clip")
    seconds = len(wavs[0]) / 16000
    runaway = DecodeOptions(suppress=(whisper.tokenizer.eot,), max_repeats=None, tokens_per_second=4.0,
                            extra_tokens=5)
    limit = int(4.0 * seconds + 5)
    for hyp in (greedy_decode(whisper.decoder, whisper.tokenizer, memory, runaway)[0],
                beam_search(whisper.decoder, whisper.tokenizer, memory,
                            dataclasses.replace(runaway, beam_size=3))[0]):
        assert hyp.stop == "length" and len(hyp.tokens) == limit
    assert DecodeOptions().max_tokens(1000.0, cap=224) == 224 and DecodeOptions().max_tokens(0.0, cap=224) == 12


def test_the_repetition_stop(whisper):
    assert repeat_cut([1, 2, 3, 3, 3], 2) == 1 and repeat_cut([1, 2, 3, 3], 2) == 0
    assert repeat_cut([9, 4, 5, 4, 5, 4, 5], 2) == 2 and repeat_cut([4, 5, 4, 5], 2) == 0
    assert repeat_cut([7] * 50, None) == 0
    # a decoder that always prefers one text token: the guard keeps max_repeats copies and stops
    torch.manual_seed(0)
    tok = whisper.tokenizer
    decoder = TextDecoder(n_vocab=tok.n_vocab, n_ctx=64, d_model=16, n_layers=1, n_heads=2, ffn_dim=32).eval()
    with torch.no_grad():
        decoder.token_embedding.weight.normal_()
        decoder.token_embedding.weight[1000] *= 30
        decoder.ln.weight.zero_()
        decoder.ln.bias.copy_(decoder.token_embedding.weight[1000])
    from dld_core.families.whisper_decoding import AudioMemory
    memory = AudioMemory(torch.randn(2, 10, 16), torch.tensor([[True] * 10, [True] * 6 + [False] * 4]), [3.0, 3.0])
    for hyp in greedy_decode(decoder, tok, memory, DecodeOptions(max_repeats=3)):
        assert hyp.tokens == [1000] * 3 and hyp.stop == "repeat"
    (hyp,) = beam_search(decoder, tok, memory.row(1), DecodeOptions(max_repeats=3, beam_size=2))
    assert hyp.tokens == [1000] * 3 and hyp.stop == "repeat"
    assert greedy_decode(decoder, tok, memory, DecodeOptions(max_repeats=None))[0].stop == "length"


def test_the_layer_mask_reaches_the_encoder(whisper):
    _, wavs = sample_clips()
    full = whisper.encode([wavs[0]], mode="clip")
    assert torch.equal(full.states, whisper.encode([wavs[0]], active=[True] * 8, mode="clip").states)
    dropped = whisper.encode([wavs[0]], active=[0, 1, 2, 3, 4, 5, 6], mode="clip")      # M4 dropped
    assert not torch.allclose(full.states, dropped.states)
    assert dropped.states.shape == full.states.shape == (1, 1500, 384)
    tail = whisper.padding_tail(None, 0.0)
    assert whisper.padding_tail(None, 0.0) is tail                                # cached
    with torch.no_grad():                                  # changed weights: a new tail
        whisper.encoder.ln_post.bias.add_(1.0)
        assert torch.allclose(whisper.padding_tail(None, 0.0), tail + 1.0, atol=1e-5)
        whisper.encoder.ln_post.bias.sub_(1.0)
    with pytest.raises(ValueError, match="layer mask"):
        whisper.encode([wavs[0]], active=[True] * 7)
    with pytest.raises(ValueError, match="input mode"):
        whisper.encode([wavs[0]], mode="chunked")
    with pytest.raises(ValueError, match="30 s"):
        whisper.encode([np.zeros(31 * 16000, dtype=np.float32)], mode="padded")


def test_the_clip_modes_tail_keys_computed_once_equal_every_clips_own():
    """start_with_tail(states, lengths, tail): the same logits and gradients as start(with_tail(...)), the memory of
    the "clip" input mode (each clip's frames, then the tail), whose keys and values are computed B times."""
    from dld_core.families.whisper_decoding import with_tail
    torch.manual_seed(0)
    decoder = TextDecoder(n_vocab=40, n_ctx=16, d_model=8, n_layers=2, n_heads=2, ffn_dim=16)
    states, tail = torch.randn(3, 6, 8), torch.randn(1, 10, 8)
    lengths, tokens = torch.tensor([6, 2, 4]), torch.randint(0, 40, (3, 5))
    runs = []
    for once in (False, True):
        s, t = states.clone().requires_grad_(True), tail.clone().requires_grad_(True)
        state = decoder.start_with_tail(s, lengths, t) if once else decoder.start(with_tail(s, lengths, t))
        logits = decoder(tokens, state, cache=False)
        logits.square().sum().backward()
        runs.append((logits.detach(), s.grad, t.grad))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)
    assert runs[0][1][1, 2:].abs().sum() == 0 and runs[0][2].abs().sum() > 0      # frames past a clip: the tail's


def test_spoken_text():
    assert spoken_text("Call me at 555-1234.") == "Call me at five five five one two three four."
    assert spoken_text("the 21st of May, 1984") == "the twenty first of May, nineteen eighty four"
    assert spoken_text("And Mr. Dashwood, 5 5") == "And mister Dashwood, five five"


# ------------------------------------------------------------------------------------ the file readers

def write_whisper_folder(folder: Path, encoder, decoder: TextDecoder) -> Path:
    """A CTranslate2 Whisper folder of `encoder` (a whisper-family Encoder) and `decoder` (float16 model.bin, as
    converted models are) with the bundled tiny.en's config.json and tokenizer.json. Returns the folder."""
    from tests.test_whisper import ct2_variables
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(ct2_bytes({**ct2_variables(encoder), **decoder_variables(decoder)}))
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(pretrained.default_model_dir() / name, folder / name)
    return folder


def decoder_variables(decoder: TextDecoder) -> dict:
    """A TextDecoder as CTranslate2's WhisperSpec decoder variables (fused projections, flags), float16."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in decoder.state_dict().items()}
    n_heads = decoder.blocks[0].attn.n_head
    out = {"decoder/embeddings/weight": sd["token_embedding.weight"],
           "decoder/position_encodings/encodings": sd["positional_embedding"],
           "decoder/layer_norm/gamma": sd["ln.weight"], "decoder/layer_norm/beta": sd["ln.bias"],
           "decoder/num_heads": np.array(n_heads, dtype=np.int16), "decoder/pre_norm": np.array(1, dtype=np.int8),
           "decoder/scale_embeddings": np.array(0, dtype=np.int8), "decoder/activation": np.array(3, dtype=np.int8),
           "decoder/alignment_layer": np.array(-1, dtype=np.int16)}
    for i in range(len(decoder.blocks)):
        p, q = f"blocks.{i}.", f"decoder/layer_{i}/"
        zeros = np.zeros_like(sd[p + "attn.query.bias"]) + np.float16(0.5)          # key biases: ignored
        out[q + "self_attention/linear_0/weight"] = np.concatenate(
            [sd[p + "attn.query.weight"], sd[p + "attn.key.weight"], sd[p + "attn.value.weight"]])
        out[q + "self_attention/linear_0/bias"] = np.concatenate([sd[p + "attn.query.bias"], zeros, sd[p + "attn.value.bias"]])
        out[q + "attention/linear_1/weight"] = np.concatenate([sd[p + "cross_attn.key.weight"], sd[p + "cross_attn.value.weight"]])
        out[q + "attention/linear_1/bias"] = np.concatenate([zeros, sd[p + "cross_attn.value.bias"]])
        for ours, theirs in (("attn.out", "self_attention/linear_1"), ("cross_attn.query", "attention/linear_0"),
                             ("cross_attn.out", "attention/linear_2"), ("mlp.0", "ffn/linear_0"), ("mlp.2", "ffn/linear_1")):
            out[q + theirs + "/weight"], out[q + theirs + "/bias"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
        for ours, theirs in (("attn_ln", "self_attention/layer_norm"), ("cross_attn_ln", "attention/layer_norm"),
                             ("mlp_ln", "ffn/layer_norm")):
            out[q + theirs + "/gamma"], out[q + theirs + "/beta"] = sd[p + ours + ".weight"], sd[p + ours + ".bias"]
    return out


def small_decoder(seed: int = 0) -> TextDecoder:
    torch.manual_seed(seed)
    decoder = TextDecoder(n_vocab=40, n_ctx=16, d_model=8, n_layers=2, n_heads=2, ffn_dim=16).eval()
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return decoder


def write_folder(folder: Path, model_bin: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(model_bin)
    (folder / "config.json").write_text("{}")
    return folder


def test_a_ctranslate2_decoder_round_trips(tmp_path):
    source = small_decoder()
    folder = write_folder(tmp_path / "ct2", ct2_bytes(decoder_variables(source)))
    loaded = load_text_decoder(folder)
    for name, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value.half().float()), name
    rounded = small_decoder()
    rounded.load_state_dict({k: v.half().float() for k, v in source.state_dict().items()})
    audio, tokens = torch.randn(1, 7, 8), torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():      # the dropped key biases change nothing
        torch.testing.assert_close(loaded(tokens, loaded.start(audio), cache=False),
                                   rounded(tokens, rounded.start(audio), cache=False))


def hostile_decoders(variables: dict) -> dict:
    good = ct2_bytes(variables)
    missing = {k: v for k, v in variables.items() if k != "decoder/layer_1/ffn/linear_0/bias"}
    wrong_shape = {**variables, "decoder/layer_0/attention/linear_0/bias": np.zeros(3, dtype=np.float16)}
    flag = {**variables, "decoder/scale_embeddings": np.array(1, dtype=np.int8)}
    relu = {**variables, "decoder/activation": np.array(0, dtype=np.int8)}
    untied = {**variables, "decoder/projection/weight": variables["decoder/embeddings/weight"] + np.float16(1)}
    odd_fused = {**variables, "decoder/layer_0/attention/linear_1/weight": np.zeros((9, 8), dtype=np.float16)}
    quantized = {**variables, "decoder/layer_0/ffn/linear_0/weight_scale": np.ones(16, dtype=np.float32)}
    unknown = {**variables, "decoder/layer_0/something/new": np.ones(2, dtype=np.float16)}
    heads = {**variables, "decoder/num_heads": np.array(3, dtype=np.int16)}
    return {
        "empty": b"", "truncated header": good[:12], "truncated tensor": good[: len(good) // 2],
        "truncated aliases": good[:-3], "trailing bytes": good + b"\0\0",
        "missing tensor": ct2_bytes(missing), "wrong shape": ct2_bytes(wrong_shape),
        "scaled embeddings": ct2_bytes(flag), "relu": ct2_bytes(relu), "untied": ct2_bytes(untied, aliases=()),
        "no projection": ct2_bytes(variables, aliases=()), "odd fused": ct2_bytes(odd_fused),
        "quantized": ct2_bytes(quantized), "unknown": ct2_bytes(unknown), "heads": ct2_bytes(heads),
        "no num_heads": ct2_bytes({k: v for k, v in variables.items() if k != "decoder/num_heads"}),
        "other spec": ct2_bytes(variables, spec="TransformerSpec"),
    }


def test_malformed_or_truncated_decoders_are_one_line_errors(tmp_path):
    variables = decoder_variables(small_decoder())
    for label, data in hostile_decoders(variables).items():
        folder = write_folder(tmp_path / label.replace(" ", "_"), data)
        with pytest.raises(CheckpointError) as err:
            load_text_decoder(folder)
        message = str(err.value)
        assert "\n" not in message and "model.bin" in message, (label, message)


def test_a_truncated_copy_of_the_pinned_model_is_refused(tmp_path):
    source = pretrained.default_model_dir()
    folder = tmp_path / "tiny"
    folder.mkdir()
    data = (source / "model.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == pretrained.DEFAULT_SHA256
    for cut in (len(data) // 3, len(data) - 40):           # inside the decoder's tensors; inside the aliases
        (folder / "model.bin").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
            load_text_decoder(folder)
        assert "\n" not in str(err.value)


def test_the_pinned_decoder_and_tokenizer(whisper):
    weights = pretrained.read_whisper_decoder()
    assert weights.dims == dict(n_vocab=51864, n_ctx=448, d_model=384, n_layers=4, n_heads=6, ffn_dim=1536)
    assert pretrained.read_whisper_decoder("default") is weights                  # parsed once per process
    tok = whisper.tokenizer
    assert (tok.sot, tok.eot, tok.no_timestamps, tok.timestamp_begin) == (50257, 50256, 50362, 50363)
    assert tok.suppress_begin == (220, 50256) and 50363 in tok.suppress and 51863 in tok.suppress
    assert tok.decode(tok.encode(" And God said, let there be light.") + [tok.eot]) == "And God said, let there be light."


def test_bad_tokenizer_files_are_one_line_errors(tmp_path):
    source = pretrained.default_model_dir()
    good = (source / "tokenizer.json").read_text()
    no_sot = json.loads(good)
    no_sot["added_tokens"] = [t for t in no_sot["added_tokens"] if t["content"] != "<|startoftranscript|>"]
    cases = {"not json": "{nope", "a list": "[1, 2]", "not bpe": json.dumps({"model": {"type": "WordPiece"}}),
             "no sot": json.dumps(no_sot)}
    folder = write_folder(tmp_path / "t", b"\0")
    for label, text in cases.items():
        (folder / "tokenizer.json").write_text(text)
        with pytest.raises(CheckpointError) as err:
            load_tokenizer(folder)
        assert "\n" not in str(err.value) and "tokenizer.json" in str(err.value), label
    (folder / "tokenizer.json").write_text(good)
    (folder / "config.json").write_text(json.dumps({"suppress_ids": [1, 99999999]}))
    with pytest.raises(CheckpointError, match="suppress_ids"):
        load_tokenizer(folder)
    shutil.copy(source / "config.json", folder / "config.json")
    assert load_tokenizer(folder).sot == 50257
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.json is missing"):
        load_tokenizer(folder)
    with pytest.raises(CheckpointError, match="no model.bin"):
        load_text_decoder(tmp_path)


def test_decoder_state_reorders_for_beams():
    decoder = small_decoder()
    audio = torch.randn(1, 5, 8)
    state = decoder.start(audio)
    with torch.no_grad():
        decoder(torch.tensor([[1, 2]]), state)
        state.reorder(torch.tensor([0, 0, 0]))
        logits = decoder(torch.tensor([[3], [4], [3]]), state)
    assert isinstance(state, DecoderState) and state.offset == 3 and state.self_kv[0][0].shape[0] == 3
    torch.testing.assert_close(logits[0], logits[2])


# ------------------------------------------------------------------------ joint CTC/attention rescoring

def test_ctc_evidence_is_the_ctc_log_likelihood_of_the_spoken_text():
    """log P_ctc(text) under frames that spell "ab": Whisper's "Ab!" is spelled "ab" as the references are, and
    gets the CTC loss's likelihood of "ab", above any other text's; -inf for a text too long for the frames."""
    from dld_core.config import CHAR_VOCAB
    from dld_core.families.whisper_decoding import CTCEvidence
    from dld_core.tokenizer import CharTokenizer

    tok = CharTokenizer(CHAR_VOCAB)
    a, b = tok.encode("a")[0], tok.encode("b")[0]
    probs = torch.full((1, 5, len(CHAR_VOCAB)), 0.01)
    for t, c in enumerate([a, 0, b, 0, 0]):
        probs[0, t, c] = 1.0
    log_probs = (probs / probs.sum(-1, keepdim=True)).log()
    evidence = CTCEvidence(torch.cat([log_probs, log_probs.flip(1)]), torch.tensor([5, 3]), tok)
    ab, ba, aab, long = evidence.log_likelihood(["Ab!", "BA", "aab", "abcdefgh"])
    want = -torch.nn.functional.ctc_loss(log_probs[0][:, None], torch.tensor([[a, b]]), torch.tensor([5]),
                                         torch.tensor([2]), reduction="none").item()
    assert ab == pytest.approx(want) and ab > ba and ab > aab and long == float("-inf")
    assert evidence.row(1).lengths.tolist() == [3] and evidence.row(1).log_likelihood(["ab"])[0] < ab


def test_joint_rescoring_ranks_the_finished_hypotheses_with_the_ctc_head(whisper, monkeypatch):
    """ctc_weight w > 0: the beam's finished hypotheses are ranked by ((1 - w) decoder + w CTC) / length; a CTC
    opinion that overwhelmingly favours one of them picks it; w = 0 asks the CTC head nothing."""
    from dld_core.families.whisper_decoding import AudioMemory, CTCEvidence
    _, wavs = sample_clips()
    memory = whisper.encode([wavs[0]], mode="clip")
    assert memory.ctc is None                                  # from_pretrained: no CTC head
    memory = AudioMemory(memory.states, memory.mask, memory.seconds,
                         CTCEvidence(torch.zeros(1, 4, 3), torch.tensor([4]), None))
    asked = []

    def favour_the_last(self, texts):
        asked.append(list(texts))
        return [0.0] * (len(texts) - 1) + [1e4]
    monkeypatch.setattr(CTCEvidence, "log_likelihood", favour_the_last)
    plain = beam_search(whisper.decoder, whisper.tokenizer, memory, DecodeOptions(beam_size=4))[0]
    assert asked == []
    joint = beam_search(whisper.decoder, whisper.tokenizer, memory, DecodeOptions(beam_size=4, ctc_weight=0.5))[0]
    assert len(asked) == 1 and len(asked[0]) == 4 and joint.text == asked[0][-1]
    assert plain.text in asked[0] and (joint.text != plain.text) == (asked[0][-1] != plain.text)
    with pytest.raises(ValueError, match="ctc_weight"):
        DecodeOptions(ctc_weight=1.5)
