"""The layer strip: one toggle per encoder module plus presets. The mask lives in st.session_state
(per browser session) and is only ever passed to forward calls."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import streamlit as st

from dld_core import masks

MASK_KEY = "mask"


def toggle_key(i: int) -> str:
    return f"layer_{i}"


def current_mask(n_layers: int) -> tuple[bool, ...]:
    return tuple(bool(st.session_state.get(toggle_key(i), True)) for i in range(n_layers))


def set_mask(mask: Sequence[bool]) -> None:
    for i, on in enumerate(mask):
        st.session_state[toggle_key(i)] = bool(on)
    st.session_state[MASK_KEY] = tuple(bool(m) for m in mask)


def _ensure_state(n_layers: int, model_key: str) -> None:
    """The strip's widget state, rebuilt from the saved mask whenever it may be stale: on the first run,
    after another model was picked (or one failed to load: its run ended before the strip was drawn, and
    the browser dropped the switches' state), and after another page was shown. The mask survives a
    switch between models of the same depth; another depth starts with every module on."""
    saved = st.session_state.get(MASK_KEY)
    if saved is None or len(saved) != n_layers:
        saved = (True,) * n_layers
    stale = any(toggle_key(i) not in st.session_state for i in range(n_layers)) or "preset_k" not in st.session_state
    if st.session_state.get("_mask_model") != model_key or stale:
        st.session_state["_mask_model"] = model_key
        set_mask(saved)
        k = st.session_state.get("preset_k")
        st.session_state["preset_k"] = k if isinstance(k, int) and 1 <= k <= n_layers else max(1, n_layers // 2)


def layer_strip(names: Sequence[str], model_key: str, best_k: Optional[Callable[[int], Optional[Sequence[bool]]]] = None,
                kept_gflops: Optional[Callable[[int], float]] = None,
                blocks: Optional[Sequence[int]] = None, protected=()) -> tuple[bool, ...]:
    """Render the strip; return the mask (also stored in st.session_state["mask"]).

    best_k(k) -> mask of the best k modules (or None when it cannot be computed).
    kept_gflops(k) -> GFLOPs with k modules kept (shown next to the k input as the budget).
    blocks: the block of each module (ModelConfig.module_blocks): the presets keep whole blocks of a model
    whose attention and MLP sub-blocks are gated apart (dld_core.masks.preset); protected: the modules the model
    was trained never to drop, which "every second" keeps.
    model_key identifies the loaded model: the widget state is rebuilt when it changes."""
    n_layers = len(names)
    _ensure_state(n_layers, model_key)

    def apply(name: str) -> None:
        k = int(st.session_state.get("preset_k", max(1, n_layers // 2)))
        try:
            mask = masks.preset(name, n_layers, k, blocks=blocks, choose=best_k, protected=protected)
        except (ValueError, RuntimeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            st.session_state["_preset_msg"] = f"{msg}; kept the mask."
            return
        set_mask(mask)
        st.session_state.pop("_preset_msg", None)

    def preset_help(key: str) -> str:
        p = masks.PRESETS[key]
        if key == "every_other":
            return f"{p.help}: {masks.describe(masks.preset(key, n_layers, 1, blocks=blocks, protected=protected), names)}"
        return p.help

    with st.container(border=True):
        head, count = st.columns([4, 1])
        head.markdown("**Layer strip** — one switch per encoder module")
        on = sum(current_mask(n_layers))
        count.markdown(f"<div style='text-align:right;color:#475569'>{on}/{n_layers} on</div>",
                       unsafe_allow_html=True)
        # One switch per module in a wrapping row, each as wide as its label: every name stays whole at
        # any window width (fixed columns squeezed 8-12 switches until the labels were cut to "L..").
        with st.container(horizontal=True, wrap=True, gap="small", key="layer_strip_switches"):
            for i in range(n_layers):
                st.toggle(names[i], key=toggle_key(i), width="content", wrap=False)
        with st.container(horizontal=True, wrap=True, gap="small", vertical_alignment="bottom",
                          key="layer_strip_presets"):
            st.number_input("k", min_value=1, max_value=n_layers, step=1, key="preset_k", width=110,
                            help="The k of " + ", ".join(f"“{p.label}”" for p in masks.PRESETS.values() if p.uses_k)
                                 + " (“Only k” keeps module k alone).")
            for key, p in masks.PRESETS.items():
                st.button(masks.preset_label(key, blocks), on_click=apply, args=(key,), key=f"preset_{key}",
                          width="content", type="primary" if key == "best_k" else "secondary",
                          help=preset_help(key))
        if kept_gflops is not None:
            try:
                k_now = int(st.session_state["preset_k"])
                st.caption(f"Budget for k = {k_now}: {kept_gflops(k_now):.3f} GFLOPs on this clip "
                           f"(full depth {kept_gflops(n_layers):.3f}).")
            except Exception:  # noqa: BLE001 - a caption must never break the page
                pass
        if st.session_state.get("_preset_msg"):
            st.caption(st.session_state["_preset_msg"])
    mask = current_mask(n_layers)
    st.session_state[MASK_KEY] = mask
    return mask
