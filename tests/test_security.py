"""Hostile checkpoints and archives: refused with a one-line CheckpointError, and nothing in them ever runs.

Every malicious payload here would create a marker file if it were unpickled; each test asserts the marker
does not exist afterwards (and a positive control shows the payloads are live).
"""
from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from dld_core import archive
from dld_core import checkpoint as ck
from dld_core import safe_io
from dld_core.archive import export_checkpoint_archive, import_checkpoint_archive
from dld_core.checkpoint import load_checkpoint, read_config, save_checkpoint
from dld_core.model import DynamicCTCModel
from dld_core.safe_io import CheckpointError
from tests.helpers import tiny_config


# ----------------------------------------------------------------------------------------- helpers
class OpenPayload:
    """Unpickling this creates (truncates) the marker file: open(marker, "w")."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


class SystemPayload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"weights": [OpenPayload(marker), SystemPayload(marker)]}, protocol=4)


def evil_torch_file(path: Path, marker: Path) -> None:
    """A real torch.save() file (zip + pickle) whose unpickling creates the marker."""
    torch.save({"encoder.weight": torch.zeros(3), "payload": OpenPayload(marker), "cmd": SystemPayload(marker)}, path)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Belt and braces: any unpickling path reached while loading fails the test loudly."""
    def boom(*a, **k):
        raise AssertionError("a checkpoint loader tried to unpickle")
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)


def refused(folder: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(folder)
    message = str(info.value)
    assert "\n" not in message and message.strip(), message
    assert "Traceback" not in message
    return message


@pytest.fixture
def good(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "good", DynamicCTCModel(tiny_config(n_layers=2)).eval(), recipe="ld")


def set_weights(folder: Path, data: bytes, recompute_checksum: bool) -> None:
    (folder / ck.WEIGHTS_FILE).write_bytes(data)
    if recompute_checksum:     # an attacker who also edits config.json: the safetensors checks must hold
        info = json.loads((folder / ck.CONFIG_FILE).read_text())
        info["weights_sha256"] = hashlib.sha256(data).hexdigest()
        (folder / ck.CONFIG_FILE).write_text(json.dumps(info))


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join_safetensors(header: dict, body: bytes, header_len: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + body


# ----------------------------------------------------------------------------------------- the payloads are live
def test_positive_control_payloads_really_run(tmp_path, monkeypatch):
    monkeypatch.undo()                      # real pickle for this test only
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(OpenPayload(marker))).close()
    assert marker.exists()
    marker.unlink()
    pickle.loads(pickle.dumps(SystemPayload(marker)))
    assert marker.exists()
    marker.unlink()
    evil_torch_file(tmp_path / "m.pt", marker)
    torch.load(tmp_path / "m.pt", weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------------------- pickles
def test_folder_with_only_a_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "ck"
    folder.mkdir()
    evil_torch_file(folder / "model.pt", marker)
    refused(folder, "no config.json")
    (folder / "model.pkl").write_bytes(evil_pickle(marker))
    refused(folder, "no config.json")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["torch_save", "raw_pickle"])
@pytest.mark.parametrize("recompute", [False, True], ids=["orig-checksum", "forged-checksum"])
def test_pickle_named_model_safetensors_is_refused(tmp_path, good, kind, recompute):
    marker = tmp_path / "pwned"
    if kind == "torch_save":
        evil_torch_file(tmp_path / "evil.pt", marker)
        data = (tmp_path / "evil.pt").read_bytes()
    else:
        data = evil_pickle(marker)
    set_weights(good, data, recompute)
    refused(good, "not a valid safetensors" if recompute else "checksum")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- lying safetensors
def _lies(header: dict, body: bytes) -> dict[str, bytes]:
    names = [k for k in header if k != "__metadata__"]
    first, second = sorted(names, key=lambda k: header[k]["data_offsets"][0])[:2]
    h = lambda: json.loads(json.dumps(header))  # noqa: E731 - a fresh deep copy per case
    cases = {}
    cases["header_len_beyond_file"] = join_safetensors(header, body, header_len=len(json.dumps(header)) + len(body) + 100)
    cases["header_len_huge"] = join_safetensors(header, body, header_len=(1 << 63) - 1)
    x = h(); x[first]["data_offsets"] = [0, len(body) + 4096]
    cases["offsets_beyond_file"] = join_safetensors(x, body)
    x = h(); x[second]["data_offsets"] = list(x[first]["data_offsets"])
    cases["overlapping_offsets"] = join_safetensors(x, body)
    x = h(); x[first]["shape"] = [d * 2 for d in x[first]["shape"]] or [2]
    cases["shape_lie"] = join_safetensors(x, body)
    x = h(); x[first]["dtype"] = "F32" if x[first]["dtype"] == "F16" else "F16"
    cases["dtype_lie"] = join_safetensors(x, body)
    x = h(); begin, end = x[first]["data_offsets"]; x[first]["dtype"] = "U8"; x[first]["shape"] = [end - begin]
    cases["dtype_not_a_weight_dtype"] = join_safetensors(x, body)
    x = h(); x[first]["dtype"] = "PICKLE"
    cases["unknown_dtype"] = join_safetensors(x, body)
    x = h(); x[first]["shape"] = [-1]
    cases["negative_shape"] = join_safetensors(x, body)
    x = h(); x[first]["extra"] = "__reduce__"
    cases["extra_entry_key"] = join_safetensors(x, body)
    cases["trailing_garbage"] = join_safetensors(header, body + b"\x00" * 16)
    cases["header_not_json"] = struct.pack("<Q", 12) + b"{not json!!}" + body
    cases["header_is_a_list"] = join_safetensors([1, 2, 3], body)  # type: ignore[arg-type]
    return cases


LIE_NAMES = list(_lies({"a": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                        "b": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]}}, b"\0" * 8))


@pytest.mark.parametrize("lie", LIE_NAMES)
@pytest.mark.parametrize("recompute", [False, True], ids=["orig-checksum", "forged-checksum"])
def test_lying_safetensors_headers_are_refused(good, lie, recompute):
    header, body = split_safetensors((good / ck.WEIGHTS_FILE).read_bytes())
    set_weights(good, _lies(header, body)[lie], recompute)
    message = refused(good, "model.safetensors" if recompute else "checksum")
    assert len(message) < 300


@pytest.mark.parametrize("lie", LIE_NAMES)
def test_safetensors_library_validation_holds_on_its_own(good, lie, monkeypatch):
    """With our own header checks switched off, the safetensors parser still refuses every lie (two
    independent layers)."""
    header, body = split_safetensors((good / ck.WEIGHTS_FILE).read_bytes())
    data = _lies(header, body)[lie]
    monkeypatch.setattr(safe_io, "check_safetensors_header", lambda *a, **k: {})
    if lie == "dtype_not_a_weight_dtype":      # a well-formed file of the wrong dtype: caught by the dtype/shape check
        set_weights(good, data, True)
        refused(good, "do not fit|dtype")
        return
    if lie == "extra_entry_key":               # harmless (the data is described truthfully): the library accepts it
        assert set(safe_io.parse_safetensors(data, "x")) == set(header) - {"__metadata__"}
        return
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        safe_io.parse_safetensors(data, "x")


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -100, -1])
@pytest.mark.parametrize("recompute", [False, True], ids=["orig-checksum", "forged-checksum"])
def test_truncated_weights_are_refused(good, cut, recompute):
    data = (good / ck.WEIGHTS_FILE).read_bytes()
    set_weights(good, data[:cut] if cut else b"", recompute)
    refused(good, "model.safetensors")


def test_non_finite_weights_are_refused(good):
    state = {k: v.clone() for k, v in load_checkpoint(good).model.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float("nan")
    from safetensors.torch import save
    set_weights(good, save({k: v.contiguous() for k, v in state.items()}), True)
    refused(good, "NaN or infinite")


def test_checksum_is_recorded_and_verified(good):
    info = read_config(good)
    assert info["weights_sha256"] == hashlib.sha256((good / ck.WEIGHTS_FILE).read_bytes()).hexdigest()
    load_checkpoint(good)
    data = bytearray((good / ck.WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01                       # one flipped bit in the weights
    (good / ck.WEIGHTS_FILE).write_bytes(bytes(data))
    refused(good, "does not match the checksum")
    info.pop("weights_sha256")
    (good / ck.CONFIG_FILE).write_text(json.dumps(info))
    refused(good, "records no weights checksum")


# ----------------------------------------------------------------------------------------- sizes and configs
def test_oversized_files_are_refused_before_reading(good, monkeypatch):
    monkeypatch.setattr(ck, "MAX_WEIGHTS_BYTES", 1000)
    refused(good, "over the 1000-byte limit")
    monkeypatch.setattr(ck, "MAX_WEIGHTS_BYTES", 1 << 30)
    monkeypatch.setattr(ck, "MAX_CONFIG_BYTES", 100)
    refused(good, "config.json is .*over the 100-byte limit")


@pytest.mark.parametrize("field,value", [("d_model", 1 << 20), ("n_layers", 100000), ("ffn_dim", 1 << 30),
                                         ("vocab", ["<blank>"] + ["x" * 100]), ("extractor_layers", [[0, 1, 1]])])
def test_configs_that_ask_for_absurd_models_are_refused(good, field, value):
    info = json.loads((good / ck.CONFIG_FILE).read_text())
    info["model"][field] = value
    (good / ck.CONFIG_FILE).write_text(json.dumps(info))
    refused(good, "invalid model config")


def test_deeply_nested_config_json_is_refused(good):
    (good / ck.CONFIG_FILE).write_text("[" * 100000 + "]" * 100000)
    refused(good, "not valid JSON")


# ----------------------------------------------------------------------------------------- links and special files
def test_config_json_symlink_is_refused(tmp_path, good):
    other = save_checkpoint(tmp_path / "other", DynamicCTCModel(tiny_config(n_layers=2)), recipe="ld")
    (good / ck.CONFIG_FILE).unlink()
    (good / ck.CONFIG_FILE).symlink_to(other / ck.CONFIG_FILE)
    refused(good, "symbolic link")
    (good / ck.CONFIG_FILE).unlink()
    (good / ck.CONFIG_FILE).symlink_to(tmp_path / "dangling.json")
    refused(good, "symbolic link")


def test_weights_symlink_pointing_outside_is_refused(tmp_path, good):
    outside = tmp_path / "outside"
    outside.mkdir()
    real = outside / "model.safetensors"
    os.replace(good / ck.WEIGHTS_FILE, real)          # checksum would match: only the link is wrong
    (good / ck.WEIGHTS_FILE).symlink_to(real)
    refused(good, "symbolic link")
    (good / ck.WEIGHTS_FILE).unlink()
    (good / ck.WEIGHTS_FILE).symlink_to("/dev/zero")   # and a link to an endless device does not hang
    refused(good, "symbolic link")


def test_special_files_are_refused_without_hanging(good):
    (good / ck.WEIGHTS_FILE).unlink()
    os.mkfifo(good / ck.WEIGHTS_FILE)                  # reading a FIFO would block forever
    refused(good, "not a regular file")
    (good / ck.WEIGHTS_FILE).unlink()
    (good / ck.WEIGHTS_FILE).mkdir()
    refused(good, "not a regular file")


def test_metrics_json_symlink_is_ignored(tmp_path, good):
    secret = tmp_path / "secret.json"
    secret.write_text('{"token": "x"}')
    (good / ck.METRICS_FILE).symlink_to(secret)
    assert ck.read_metrics(good) is None


# ----------------------------------------------------------------------------------------- crash-consistent commits
def test_kill_between_config_and_weights_rename_still_loads(tmp_path, good, monkeypatch):
    """A writer killed after committing config.json but before renaming the new weights into place leaves a
    checkpoint that loads (from the pending file whose checksum matches) and that training repairs."""
    torch.manual_seed(1)
    newer = DynamicCTCModel(tiny_config(n_layers=2)).eval()
    real_replace = os.replace

    def die_on_final_rename(src, dst):
        if str(src).endswith(safe_io.PENDING_SUFFIX):
            raise KeyboardInterrupt("simulated kill")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", die_on_final_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(good, newer, recipe="ld")
    monkeypatch.setattr(os, "replace", real_replace)
    loaded = load_checkpoint(good).model.state_dict()
    for k, v in newer.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(loaded[k], v.half().float()), k
    ck.recover_checkpoint_folder(good)
    assert not safe_io.pending_path(good / ck.WEIGHTS_FILE).exists()
    assert read_config(good)["weights_sha256"] == safe_io.sha256_file(good / ck.WEIGHTS_FILE)


def test_failing_weights_write_leaves_the_old_checkpoint(good, monkeypatch):
    before = (good / ck.WEIGHTS_FILE).read_bytes(), (good / ck.CONFIG_FILE).read_bytes()

    def full_disk(path, tensors, metadata=None):
        Path(path).write_bytes(b"\0" * 10)             # a half-written file, then the error
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safe_io, "atomic_save_tensors", full_disk)
    with pytest.raises(OSError):
        save_checkpoint(good, DynamicCTCModel(tiny_config(n_layers=2)), recipe="ld")
    assert ((good / ck.WEIGHTS_FILE).read_bytes(), (good / ck.CONFIG_FILE).read_bytes()) == before
    load_checkpoint(good)


# ----------------------------------------------------------------------------------------- archives
def make_zip(members: list[tuple], path: Path | None = None) -> bytes:
    """members: (name, bytes) or (ZipInfo, bytes). "jsonNUL.txt" in a name gets real NUL bytes (zipfile's
    writer would cut the name there; a hostile archive need not)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # "Duplicate name" is the point of one case
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    data = buf.getvalue().replace(b"jsonNUL.txt", b"json\0\0\0.txt")
    if path is not None:
        path.write_bytes(data)
    return data


def good_members(folder: Path, prefix: str = "ck/") -> list[tuple]:
    return [(prefix + ck.CONFIG_FILE, (folder / ck.CONFIG_FILE).read_bytes()),
            (prefix + ck.WEIGHTS_FILE, (folder / ck.WEIGHTS_FILE).read_bytes())]


def assert_nothing_left(root: Path, outside: Path) -> None:
    if root.exists():
        assert [p.name for p in root.iterdir()] == [], list(root.iterdir())
    assert not list(outside.rglob("evil*")), "an archive wrote outside its destination"


def test_archive_round_trip(tmp_path, good):
    data = export_checkpoint_archive(good, tmp_path / "good.zip")
    dest = import_checkpoint_archive(tmp_path / "good.zip", tmp_path / "imported")
    assert dest == tmp_path / "imported" / "good"
    a, b = load_checkpoint(good).model.state_dict(), load_checkpoint(dest).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    flat = import_checkpoint_archive(make_zip(good_members(good, "")), tmp_path / "imported", name="flat")
    assert load_checkpoint(flat).config == load_checkpoint(good).config
    with pytest.raises(CheckpointError, match="already exists"):
        import_checkpoint_archive(data, tmp_path / "imported")
    assert sorted(p.name for p in (tmp_path / "imported").iterdir()) == ["flat", "good"]


def _symlink_member(name: str, target: str) -> tuple:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info, target.encode()


def _bad_archives(good: Path, marker: Path) -> dict[str, tuple[list, str]]:
    base = good_members(good)
    return {
        "dotdot": (base + [("ck/../../evil.txt", b"x")], r"'\.\.'"),
        "dotdot_top": ([("../evil/config.json", b"{}"), ("../evil/model.safetensors", b"")], r"'\.\.'"),
        "absolute": (base + [("/tmp/evil.txt", b"x")], "absolute path"),
        "windows_absolute": (base + [("C:/evil.txt", b"x")], "absolute path"),
        "backslash": (base + [("ck\\..\\evil.txt", b"x")], "invalid name"),
        "symlink_weights": ([base[0], _symlink_member("ck/model.safetensors", "/etc/passwd")], "symbolic link"),
        "symlink_extra": (base + [_symlink_member("ck/metrics.json", "../../evil")], "symbolic link"),
        "pickle_member": (base + [("ck/model.pt", evil_pickle(marker))], "not a checkpoint file"),
        "only_pickle": ([("ck/model.pt", evil_pickle(marker))], "not a checkpoint file"),
        "nested": ([("a/b/config.json", b"{}")], "nested too deeply"),
        "two_checkpoints": (base + good_members(good, "other/"), "twice|more than one"),
        "duplicate": (base + [base[1]], "twice"),
        "missing_weights": ([base[0]], "no model.safetensors"),
        "nul_in_name": (base + [("ck/metrics.jsonNUL.txt", b"{}")], "invalid name"),     # NUL patched in below
        "bad_metrics": (base + [("ck/metrics.json", b"\x80not json")], "metrics.json is not valid JSON"),
        "tampered_weights": ([base[0], (base[1][0], base[1][1][:-1] + b"\x01")], "checksum"),
        "pickle_as_weights": ([base[0], (base[1][0], evil_pickle(marker))], "checksum"),
    }


BAD_ARCHIVES = [
    "dotdot", "dotdot_top", "absolute", "windows_absolute", "backslash", "symlink_weights", "symlink_extra",
    "pickle_member", "only_pickle", "nested", "two_checkpoints", "duplicate", "missing_weights", "nul_in_name",
    "bad_metrics", "tampered_weights", "pickle_as_weights"]


@pytest.mark.parametrize("case", BAD_ARCHIVES)
def test_bad_archives_are_refused_and_leave_nothing(tmp_path, good, case):
    marker = tmp_path / "pwned"
    members, match = _bad_archives(good, marker)[case]
    dest_root = tmp_path / "sandbox" / "checkpoints"
    dest_root.mkdir(parents=True)
    for source in (make_zip(members), make_zip(members, tmp_path / "sandbox" / "up.zip")):
        with pytest.raises(CheckpointError, match=match) as info:
            import_checkpoint_archive(source if isinstance(source, bytes) else tmp_path / "sandbox" / "up.zip", dest_root)
        assert "\n" not in str(info.value)
        assert_nothing_left(dest_root, tmp_path)
    assert not marker.exists()


def test_archive_size_limits_and_lying_sizes(tmp_path, good, monkeypatch):
    root = tmp_path / "root"
    # a zip bomb: 20 MB of zeros in a few KB, declared honestly -> refused from the directory, before extracting
    monkeypatch.setattr(ck, "MAX_METRICS_BYTES", 1 << 20)
    bomb = make_zip(good_members(good) + [("ck/metrics.json", b"0" * (20 << 20))])
    assert len(bomb) < 200_000
    with pytest.raises(CheckpointError, match="over the"):
        import_checkpoint_archive(bomb, root)
    # the same bomb with its sizes rewritten to claim 100 bytes -> stopped while decompressing
    lying = bytearray(bomb)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = 0
        while (pos := lying.find(sig, pos)) >= 0:
            name_len = struct.unpack("<H", lying[pos + (26 if sig == b"PK\x03\x04" else 28):][:2])[0]
            name = bytes(lying[pos + (30 if sig == b"PK\x03\x04" else 46):][:name_len])
            if name == b"ck/metrics.json":
                lying[pos + off: pos + off + 4] = struct.pack("<I", 100)
            pos += 4
    with pytest.raises(CheckpointError):
        import_checkpoint_archive(bytes(lying), root)
    monkeypatch.setattr(ck, "MAX_WEIGHTS_BYTES", 1000)
    with pytest.raises(CheckpointError, match="over the 1000-byte limit"):
        import_checkpoint_archive(make_zip(good_members(good)), root)
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize("blob,match", [(b"", "not a valid zip"), (b"PK\x03\x04garbage", "not a valid zip"),
                                        (b"\x80\x04K\x01.", "not a valid zip")])
def test_not_a_zip(tmp_path, blob, match):
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint_archive(blob, tmp_path)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "x" * 100, "-"])
def test_archive_destination_name_is_checked(tmp_path, good, name):
    with pytest.raises(CheckpointError, match="usable checkpoint name"):
        import_checkpoint_archive(make_zip(good_members(good, "")), tmp_path / "root", name=name)
    assert not (tmp_path / "escape").exists()


def test_encrypted_member_flag_is_refused(tmp_path, good):
    data = bytearray(make_zip(good_members(good)))
    pos = data.find(b"PK\x01\x02")                       # central directory entry of the first member
    flags = struct.unpack("<H", data[pos + 8: pos + 10])[0]
    data[pos + 8: pos + 10] = struct.pack("<H", flags | 1)
    with pytest.raises(CheckpointError, match="encrypted"):
        import_checkpoint_archive(bytes(data), tmp_path / "root")


def test_archive_module_uses_no_pickle():
    source = "".join(Path(module.__file__).read_text() for module in (archive, ck, safe_io))
    for banned in ("import pickle", "torch.load(", "pickle.load", "weights_only=False"):
        assert banned not in source


def test_weights_bigger_than_the_config_needs_are_refused_from_declared_sizes(tmp_path, good, monkeypatch):
    """An honest 1 GiB-class member is refused from the zip directory, before anything is extracted or
    read: the limit follows the archive's own config.json (checkpoint.max_weights_bytes)."""
    import resource
    limit = ck.max_weights_bytes(ck.read_config(good))
    assert (good / ck.WEIGHTS_FILE).stat().st_size <= limit < 64 << 20
    big = good_members(good)[:1] + [("ck/" + ck.WEIGHTS_FILE, b"\0" * (limit + 1024))]
    extracted = []
    monkeypatch.setattr(archive, "_extract", lambda *a, **k: extracted.append(a))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="more than the .* bytes its config.json can need"):
        import_checkpoint_archive(make_zip(big), tmp_path / "root")
    assert extracted == [] and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000
    (good / ck.WEIGHTS_FILE).write_bytes((good / ck.WEIGHTS_FILE).read_bytes() + b"\0" * (limit + 1))
    with pytest.raises(CheckpointError, match="over the"):          # a folder: refused from its size too
        load_checkpoint(good)
