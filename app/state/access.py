"""Who can reach the app, and what the operator allows: training on or off, the data folders whose manifests
visitors may name when the app is served to a network."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import streamlit as st

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def served_to_network() -> bool:
    """True when the server listens beyond this machine (server.address is not a loopback address)."""
    return str(st.get_option("server.address") or "0.0.0.0") not in LOCAL_ADDRESSES


def training_enabled() -> bool:
    """The operator's switch: DLD_TRAINING=off hides training (the Train page only shows past jobs)."""
    return os.environ.get("DLD_TRAINING", "on").strip().lower() not in ("off", "0", "false", "no")


def data_dirs() -> list[Path]:
    """Folders whose manifests the Train page may read when the app is served to a network
    (DLD_DATA_DIRS, separated by ':'); none by default, so visitors can use only the built-in corpus."""
    return [Path(p).expanduser().resolve() for p in os.environ.get("DLD_DATA_DIRS", "").split(":") if p.strip()]


def manifest_problem(text: str, what: str) -> Optional[str]:
    """Why a typed manifest path cannot be used, or None. Served to a network, a path outside the allowed
    data folders is refused before the file system is asked anything, so the message never reveals which
    files exist."""
    path = Path(text.strip()).expanduser()
    if served_to_network():
        resolved = path.resolve()                  # links resolved: a link cannot point outside
        if not any(resolved.is_relative_to(d) for d in data_dirs()):
            return (f"The {what} must be inside a data folder the operator allows (DLD_DATA_DIRS)."
                    if data_dirs() else "This server accepts no manifest paths: use the built-in corpus.")
    return None if path.is_file() else f"The {what} is not a readable file."
