"""One ONNX graph from audio to the greedy transcript: transcribe.onnx, next to features.onnx and the model file.

`python -m dld_core deploy --format onnx` writes it, so a deployed folder transcribes a clip with onnxruntime in
one call (README, "Run the exported model without DLD Studio"):

    input    audio [1, samples] float32: one 16 kHz mono clip
    output   text [characters] string: the greedy CTC transcript, one vocabulary entry per element ("".join it)

The graph is features.onnx, then the model file (model.onnx or model.int8.onnx), then greedy CTC decoding
(`greedy_graph`: ArgMax of every frame, repeats and blanks dropped with Compress, runs of spaces merged as
dld_core.decode does, the kept ids Gathered from the vocabulary as a string constant), so "".join(text) is
DLD Studio's greedy transcript. The batch is one clip, whose length the graph reads from the input's shape
(onnxruntime refuses another batch size: each clip has its own transcript, which one string tensor cannot hold).

It holds no copy of the weights: each initializer whose bytes are stored in features.onnx or the model file
is an ONNX external-data reference (file, offset, length) to those very bytes (`share_weights`), so the folder
grows by the graph's nodes (a few hundred kilobytes), not by a second copy of the model. It therefore runs
by path from its folder (as the README does), next to the two files it reads. deploy checks its transcript
against DLD Studio's greedy decoding of the folder's front end and model file at export time
(dld_core.deploy.transcribe_check, with `run_transcribe`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

TRANSCRIBE_FILE = "transcribe.onnx"
INPUTS = {"audio": "float32 [1, samples]: one 16 kHz mono clip"}
OUTPUTS = {"text": "string [characters]: the greedy CTC transcript, one vocabulary entry per element "
                   "(\"\".join it)"}
SHARED_MIN_BYTES = 256        # initializers this big or bigger are read from the files that hold them
BLANK = 0                     # the CTC blank's id (this project's vocabularies put it first)
SPACE = " "                   # the word separator token, whose runs greedy decoding collapses


def greedy_graph(vocab: Sequence[str], opset: int):
    """Greedy CTC decoding of one clip as an ONNX model: log_probs [1, frames, vocab] float32, out_lengths [1]
    int64 -> text [characters] string. dld_core.decode.greedy_decode step by step: the argmax of each valid
    frame, repeats merged, blanks dropped; then its whitespace clean-up (a space after a space, and spaces at
    either end, dropped), so that "".join(text) is DLD Studio's greedy transcript."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], **attrs)

    def drop_where_neighbour(ids, flag, prefix, before: bool):
        """Compress away the ids whose `flag` is set and whose previous (before) or next id's flag is set too; a
        missing neighbour (before the first, after the last) counts as set."""
        return [node("Concat", ["true", flag] if before else [flag, "true"], f"{prefix}_padded", axis=0),
                node("Slice", [f"{prefix}_padded", "zero", "minus_one"] if before else
                     [f"{prefix}_padded", "one", "end"], f"{prefix}_neighbour"),
                node("And", [flag, f"{prefix}_neighbour"], f"{prefix}_drop"),
                node("Not", [f"{prefix}_drop"], f"{prefix}_keep"),
                node("Compress", [ids, f"{prefix}_keep"], f"{prefix}_ids", axis=0)]

    nodes = [const("zero", np.array([0], np.int64)), const("minus_one", np.array([-1], np.int64)),
             const("before_first", np.array([-1], np.int64)), const("blank", np.array(BLANK, np.int64)),
             helper.make_node("Constant", [], ["vocab"], value=helper.make_tensor(
                 "vocab", TensorProto.STRING, [len(vocab)], [token.encode("utf-8") for token in vocab])),
             node("ArgMax", ["log_probs"], "best", axis=2, keepdims=0),                    # [1, frames]
             node("Squeeze", ["best", "zero"], "frame_ids"),                               # [frames]
             node("Slice", ["frame_ids", "zero", "out_lengths", "zero"], "ids"),           # the valid frames
             node("Concat", ["before_first", "ids"], "shifted", axis=0),
             node("Slice", ["shifted", "zero", "minus_one"], "previous"),                  # ids[k - 1]
             node("Equal", ["ids", "previous"], "repeat"),
             node("Equal", ["ids", "blank"], "is_blank"),
             node("Or", ["repeat", "is_blank"], "dropped"),
             node("Not", ["dropped"], "kept"),
             node("Compress", ["ids", "kept"], "tokens", axis=0)]
    tokens = "tokens"
    if SPACE in vocab:                     # " ".join(text.split()): no space first, last or after a space
        nodes += [const("space", np.array(list(vocab).index(SPACE), np.int64)), const("true", np.array([True])),
                  const("one", np.array([1], np.int64)), const("end", np.array([np.iinfo(np.int64).max])),
                  node("Equal", ["tokens", "space"], "is_space")]
        nodes += drop_where_neighbour("tokens", "is_space", "lead", before=True)
        nodes += [node("Equal", ["lead_ids", "space"], "is_space_left")]
        nodes += drop_where_neighbour("lead_ids", "is_space_left", "trail", before=False)
        tokens = "trail_ids"
    nodes.append(node("Gather", ["vocab", tokens], "text", axis=0))
    graph = helper.make_graph(
        nodes, "greedy_ctc",
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, [1, "out_frames", len(vocab)]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["characters"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def compose(features_path: Path, model_path: Path, vocab: Sequence[str], opset: int):
    """features.onnx -> the model file -> greedy_graph, as one ONNX model whose audio batch is one clip, whose
    length the graph takes from the input's shape (each part's inner names prefixed, so they cannot collide)."""
    import onnx
    from onnx.compose import add_prefix_graph, merge_graphs

    features, model = onnx.load(str(features_path)), onnx.load(str(model_path))
    greedy = greedy_graph(vocab, opset)
    inner = dict(rename_inputs=False, rename_outputs=False)
    parts = [add_prefix_graph(m.graph, f"{prefix}/", **inner)
             for m, prefix in ((features, "features"), (model, "model"), (greedy, "greedy"))]
    graph = merge_graphs(parts[0], parts[1], [("features", "features"), ("lengths", "lengths")],
                         outputs=["log_probs", "out_lengths"])
    graph = merge_graphs(graph, parts[2], [("log_probs", "log_probs"), ("out_lengths", "out_lengths")],
                         outputs=["text"], name="transcribe")
    audio = next(value for value in graph.input if value.name == "audio")
    audio.type.tensor_type.shape.dim[0].dim_value = 1       # one clip: onnxruntime refuses any other batch size
    del graph.input[:]
    graph.input.append(audio)
    length = [onnx.helper.make_node("Shape", ["audio"], ["audio_lengths"], start=1, end=2)]   # [samples]
    nodes = length + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    opsets = {o.domain: o.version for m in (features, model, greedy) for o in m.opset_import}
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()],
                                  ir_version=model.ir_version, producer_name="dld_core.onnx_transcribe")


def constants_to_initializers(graph, min_bytes: int = SHARED_MIN_BYTES) -> None:
    """Turn each Constant node holding a tensor of `min_bytes` or more (the exporter keeps e.g. the front end's
    DFT basis so) into an initializer of the same name, which `share_weights` can then point at its file."""
    kept = []
    for node in graph.node:
        value = node.attribute[0].t if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if value is not None and node.attribute[0].name == "value" and len(value.raw_data) >= min_bytes:
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def share_weights(model, folder: Path, files: Sequence[str]) -> int:
    """Point every initializer of `model` of SHARED_MIN_BYTES or more whose bytes are stored, as they are, in
    one of `files` (in `folder`) at those bytes (ONNX external data: location, offset, length) instead of
    holding a copy; the first place holding the same bytes will do. Returns how many were shared."""
    from onnx import TensorProto
    from onnx.external_data_helper import set_external_data
    stored = {name: (Path(folder) / name).read_bytes() for name in files}
    shared = 0
    for tensor in model.graph.initializer:
        raw = tensor.raw_data
        if len(raw) < SHARED_MIN_BYTES:
            continue
        for name, data in stored.items():
            offset = data.find(raw)
            if offset >= 0:
                set_external_data(tensor, name, offset, len(raw))
                tensor.data_location = TensorProto.EXTERNAL
                tensor.ClearField("raw_data")
                shared += 1
                break
    return shared


def export_transcribe(folder: Path, model_file: str, features_file: str, vocab: Sequence[str], opset: int) -> int:
    """Write folder/transcribe.onnx (see the module docstring) from the folder's front end and model file.
    Returns how many initializers it reads from those two files."""
    model = compose(folder / features_file, folder / model_file, vocab, opset)
    constants_to_initializers(model.graph)
    shared = share_weights(model, folder, [model_file, features_file])
    (folder / TRANSCRIBE_FILE).write_bytes(model.SerializeToString())     # never onnx.save: it would write the
    return shared                                                          # external data into those files


def run_transcribe(path: Path, waveform) -> str:
    """transcribe.onnx on one 16 kHz waveform, run with onnxruntime alone as the README does: the transcript."""
    import onnxruntime as ort
    audio = np.asarray(waveform, dtype=np.float32)[None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    text = session.run(None, {"audio": audio})[0]
    return "".join(text)
