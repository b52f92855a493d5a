"""The How DLD works page's story (dld_core/story.py): its candidate half masks, and the story of an encoder-decoder
student, told by text decoders (greedy, the student's input mode) against the unchanged pretrained Whisper it was
distilled from. Tiny models: a random CTranslate2 Whisper folder and a student with its encoder moved
(tests.app_fixtures.make_text_story_checkpoints); the CTC story is tested in tests/test_app_teaching.py and on the
shipped models in tests/test_shipped_models.py."""
from __future__ import annotations

import json

import pytest

from dld_core import masks as M
from dld_core import seq2seq, story
from dld_core.audio import load_audio
from dld_core.checkpoint import load_checkpoint
from dld_core.config import ModelConfig
from dld_core.families import whisper as W
from dld_core.families.whisper_decoding import WhisperSeq2Seq, spoken_text
from dld_core.inference import recognize
from dld_core.metrics import cer, wer
from dld_core.model import DynamicCTCModel
from tests.app_fixtures import make_text_story_checkpoints, make_text_story_samples


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("text_story")
    ckpts = make_text_story_checkpoints(root)
    manifest, active = make_text_story_samples(ckpts, root / "samples")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    clips = [(load_audio(str(manifest.parent / r["audio_filepath"])).samples, r["text"]) for r in rows]
    return {"ckpts": ckpts, "clips": clips, "active": active, "student": load_checkpoint(ckpts["dld"]).model.eval(),
            "pretrained": story.pretrained_whisper(str(ckpts["pretrained"]))}


def test_the_text_story_runs_both_text_decoders_on_the_clip_and_mask_that_show_the_point(world, monkeypatch):
    """Clip 0's reference is the student's own transcript with one half mask, where the pretrained Whisper writes
    something else: that clip and mask are the story; each run is the text decoder's greedy transcript in the
    student's input mode, scored on its spoken form."""
    student, pretrained, clips = world["student"], world["pretrained"], world["clips"]
    searches, transcribe = [], WhisperSeq2Seq.transcribe

    def spy(self, waveforms, active=None, mode="padded", options=seq2seq.decode_options("whisper"), **kw):
        searches.append((self.decoder is pretrained.decoder, mode, options.beam_size, options.ctc_weight))
        return transcribe(self, waveforms, active, mode, options, **kw)

    monkeypatch.setattr(WhisperSeq2Seq, "transcribe", spy)
    found = story.choose_text_story(student, pretrained, clips, mode="clip")
    monkeypatch.undo()
    # every run: greedy (one beam, no CTC rescoring) in the student's mode, by both models' text decoders
    assert set(searches) == {(True, "clip", 1, 0.0), (False, "clip", 1, 0.0)}
    assert found is not None and found["student_ahead"] and found["mode"] == "clip"
    assert (found["clip"], found["active"]) == (0, world["active"])
    assert found["candidates"] == len(story.half_masks(student.num_modules, blocks=student.config.module_blocks))
    wav, reference = clips[0]
    assert found["reference"] == reference
    # the models' own transcripts, computed here through dld_core.seq2seq and WhisperSeq2Seq
    own = seq2seq.text_transcriber(student, "whisper", "clip")([wav], found["active"])[0]
    unchanged = WhisperSeq2Seq.from_pretrained(str(world["ckpts"]["pretrained"]))
    options = seq2seq.decode_options("whisper")
    expected = {"teacher_full": unchanged.transcribe([wav], None, "clip", options)[0].text,
                "teacher_half": unchanged.transcribe([wav], found["active"], "clip", options)[0].text,
                "student_half": own}
    for run, text in expected.items():
        spoken = spoken_text(text)
        assert found[run] == {"text": text, "spoken": spoken, "wer": wer([reference], [spoken]),
                              "cer": cer([reference], [spoken])}, run
    assert found["student_half"]["wer"] == 0.0 < found["teacher_half"]["wer"]
    # the text decoder's transcript, not the CTC head's
    assert recognize(student, [wav], active=M.as_bools(found["active"], student.num_modules)).texts[0] != own


def test_a_student_no_better_than_its_teacher_tells_no_story_unless_asked_for_the_closest(world):
    """A fresh student of the pretrained folder is that Whisper: it is never ahead, so no story (None); with
    fallback, the closest pair, marked as not ahead."""
    folder = world["ckpts"]["pretrained"]
    same = DynamicCTCModel(seq2seq.with_decoder(W.config_from_pretrained(folder, dropout=0.0), str(folder)))
    W.load_pretrained(same, folder)
    seq2seq.load_decoder(same, str(folder))
    assert story.choose_text_story(same, world["pretrained"], world["clips"], mode="clip") is None
    closest = story.choose_text_story(same, world["pretrained"], world["clips"], mode="clip", fallback=True)
    assert closest is not None and closest["student_ahead"] is False
    assert closest["student_half"] == closest["teacher_half"]
    # the story of the moved student is told even with fallback: it is ahead there
    assert story.choose_text_story(world["student"], world["pretrained"], world["clips"], mode="clip",
                                   fallback=True)["student_ahead"] is True


def test_the_story_s_half_masks_keep_the_protected_modules():
    blocks = [0, 0, 1, 1, 2, 2, 3, 3]                                   # A1 M1 .. A4 M4
    every = M.candidate_masks(8, 4, blocks, 2, 0)
    assert story.half_masks(8, blocks=blocks) == every == story.half_masks(8, blocks=blocks, protected=[False] * 8)
    keep_a1 = story.half_masks(8, blocks=blocks, protected=[0])
    assert keep_a1 == [c for c in every if 0 in c] and 0 < len(keep_a1) < len(every)
    assert story.half_masks(8, blocks=blocks, protected=M.Mask.parse("A1", [f"{p}{b}" for b in range(1, 5)
                                                                               for p in "AM"])) == keep_a1
    assert story.half_masks(8, blocks=blocks, protected=[0, 1, 2, 3, 4]) == every   # none keeps 5 of 4: all
    assert story.half_masks(8, kept=2, blocks=blocks) == M.candidate_masks(8, 2, blocks, 2, 0)


def test_the_text_story_keeps_the_protected_modules(world):
    student, pretrained, clips = world["student"], world["pretrained"], world["clips"]
    n, blocks = student.num_modules, student.config.module_blocks
    keep = world["active"][0]
    found = story.choose_text_story(student, pretrained, clips, mode="clip", protected=[keep])
    assert found["active"] == world["active"]
    assert found["candidates"] == len(story.half_masks(n, blocks=blocks, protected=[keep])) < len(
        story.half_masks(n, blocks=blocks))


def test_the_text_story_refuses_a_ctc_student_and_other_modules(world):
    ctc = load_checkpoint(world["ckpts"]["teacher"]).model
    with pytest.raises(ValueError, match="no text decoder"):
        story.choose_text_story(ctc, world["pretrained"], world["clips"])
    pretrained = world["pretrained"]
    other = WhisperSeq2Seq(W.Encoder(ModelConfig(family="whisper", d_model=16, n_layers=1, n_heads=2, ffn_dim=32,
                                                 max_frames=500)), pretrained.decoder, pretrained.tokenizer)
    with pytest.raises(ValueError, match="2 gated modules, the student 4"):
        story.choose_text_story(world["student"], other, world["clips"])


def test_the_pretrained_whisper_of_a_student():
    assert story.pretrained_source({}) == "default" == story.pretrained_source({"train": {"input_mode": "clip"}})
    assert story.pretrained_source({"train": {"pretrained": "/models/whisper-base.en"}}) == "/models/whisper-base.en"
    assert story.pretrained_name("default") == "Whisper tiny.en"
    assert story.pretrained_name("/models/whisper-base.en") == "Whisper (whisper-base.en)"
