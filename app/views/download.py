"""The "Download this model" control of the Budgets card and of Inspect: the sub-network of the mask in front
of the user as a zip (dld_core.download: the exported folder and a README on running it with onnxruntime).
Nothing is exported until the user presses "Prepare download"; zips are cached on disk by (checkpoint, mask,
format) and shared by every session (app.state.paths.downloads_dir()). Only the checkpoint's path and the mask
are used here: the shared cached model is never touched."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import streamlit as st

from app.state.paths import downloads_dir
from app.views.messages import one_line
from dld_core import download

log = logging.getLogger(__name__)


def download_control(checkpoint: Path, module_names: Sequence[str], mask: Sequence[bool], key: str) -> None:
    """A format picker, then "Prepare download" (export, a few seconds) or, once the zip exists, the download
    button, in a "Download this model" section. `key` prefixes the widget keys (one control per page)."""
    with st.expander("Download this model", icon=":material/download:"):
        _control(Path(checkpoint), module_names, tuple(bool(on) for on in mask), key)


def _control(checkpoint: Path, module_names: Sequence[str], active: tuple, key: str) -> None:
    fmt = st.selectbox("Format", list(download.FORMATS), format_func=download.LABELS.get,
                       key=f"{key}_format",
                       help="ONNX runs with onnxruntime alone (the zip's README shows how); int8 is about half the "
                            "size, with slightly different output; safetensors is a checkpoint DLD Studio loads.")
    try:
        path = download.cached_zip(downloads_dir(), checkpoint, active, fmt)
    except (OSError, ValueError) as exc:
        st.error(f"Cannot export this model — {one_line(exc)}", icon=":material/error:")
        return
    if path is None:
        slot = st.empty()
        if not slot.button("Prepare download", icon=":material/package_2:", key=f"{key}_prepare",
                           help="Exports the modules this mask keeps as a small static model (a few seconds)."):
            st.caption(f"Exports the {sum(active)} kept modules as a zip with a README (a few seconds).")
            return
        slot.empty()                            # the download button takes its place
        try:
            with st.spinner("Exporting the model…"):
                path = download.prepare_zip(downloads_dir(), checkpoint, active, fmt)
        except Exception as exc:  # noqa: BLE001 - any export failure is one line on the page, never a traceback
            log.warning("export of %s failed", checkpoint, exc_info=True)
            st.error(f"Cannot export this model — {one_line(exc)}", icon=":material/error:")
            return
    name = download.file_name(checkpoint, module_names, active, fmt)
    st.download_button(f"Download {name}", data=lambda: path.read_bytes(), file_name=name, mime="application/zip",
                       on_click="ignore", icon=":material/download:", key=f"{key}_download",
                       help="The exported folder (model/) and a README.md on running it without DLD Studio.")
