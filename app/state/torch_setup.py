"""torch in the Streamlit server: the intra-op thread count of each script run, and the FLOP counter's
one-off setup paid once per server."""
from __future__ import annotations

import os

import streamlit as st
import torch


# One intra-op thread per request by default: the server runs several sessions (and maybe a training job)
# on few cores, and multi-threaded kernels slow down many-fold when their threads are descheduled
# (measured on 2 shared cores: a 10 s forward took 60-80 ms with 1 thread, 300-2500 ms with 2).
def configure_torch() -> None:
    """Call at the start of every script run: OpenMP thread counts are per OS thread, and Streamlit runs
    each session's script in a thread of its own."""
    try:
        threads = max(1, int(os.environ.get("DLD_TORCH_THREADS", "1")))
    except ValueError:
        threads = 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


configure_torch()


@st.cache_resource(show_spinner=False)
def warm_up_flop_counter() -> bool:
    """The first FLOP count in a process pays ~1 s of one-off setup (torch imports torch._dynamo the first
    time FlopCounterMode is used). Pay it once per server, on a background thread, while the first
    session loads its models."""
    import threading

    def work() -> None:
        try:
            from dld_core.config import ModelConfig
            from dld_core.flops import gflops
            gflops(ModelConfig(d_model=16, n_layers=1, n_heads=2, ffn_dim=16), 0.5, None)
        except Exception:  # noqa: BLE001 - a warm-up must never break the app
            pass

    threading.Thread(target=work, name="dld-flops-warmup", daemon=True).start()
    return True
