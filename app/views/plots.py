"""Plotly figures used by the pages. Pure functions of numpy arrays / pandas frames: no model math here."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# One colour per recipe, reused by every chart so "DLD" always looks the same.
RECIPE_COLORS = {"teacher": "#0f172a", "ld": "#f59e0b", "dld": "#4f46e5", "unknown": "#64748b"}
from dld_core.config import RECIPE_LABELS as RECIPE_NAMES
MARGIN = dict(l=10, r=10, t=40, b=10)
FONT = dict(family="Inter, system-ui, sans-serif", size=12)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0, font=dict(size=14)), height=height, margin=MARGIN,
                      font=FONT, template="plotly_white")
    return fig


def token_label(token: str) -> str:
    return {"<blank>": "blank", " ": "space"}.get(token, token)


def layer_labels(names: Sequence[str], active: Optional[Sequence[bool]] = None) -> list[str]:
    """Module names (dld_core: L1.., A1 M1 ..), marked "(off)" where the mask drops them."""
    if active is None:
        return list(names)
    return [name if on else f"{name} (off)" for name, on in zip(names, active)]


def _time_axis(n: int, frame_sec: float) -> np.ndarray:
    return (np.arange(n) + 0.5) * frame_sec


def _decimate(matrix: np.ndarray, frame_sec: float, max_cols: int) -> tuple[np.ndarray, float]:
    """Average-pool columns so a browser never gets more than max_cols time steps (keeps the JSON small)."""
    cols = matrix.shape[1]
    if cols <= max_cols:
        return matrix, frame_sec
    step = int(np.ceil(cols / max_cols))
    pad = (-cols) % step
    if pad:
        matrix = np.concatenate([matrix, np.repeat(matrix[:, -1:], pad, axis=1)], axis=1)
    pooled = matrix.reshape(matrix.shape[0], -1, step).mean(axis=2)
    return pooled, frame_sec * step


def spectrogram_posteriorgram(logmel: np.ndarray, mel_frame_sec: float, posteriors: np.ndarray,
                              post_frame_sec: float, vocab: Sequence[str], title: str = "") -> go.Figure:
    """logmel [T, n_mels] on top; the CTC posteriorgram [T', V] (probabilities) under it, same time axis."""
    spec, spec_sec = _decimate(np.asarray(logmel, dtype=np.float32).T, mel_frame_sec, 800)
    post = np.asarray(posteriors, dtype=np.float32).T                              # [V, T']
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.32, 0.68],
                        subplot_titles=("Log-mel spectrogram", "CTC posteriorgram (student, current mask)"))
    fig.add_trace(go.Heatmap(
        z=spec, x=_time_axis(spec.shape[1], spec_sec), y=np.arange(spec.shape[0]), colorscale="Magma",
        showscale=False, hovertemplate="t = %{x:.2f} s<br>mel bin %{y}<br>%{z:.2f}<extra></extra>"), row=1, col=1)
    labels = [token_label(t) for t in vocab]
    fig.add_trace(go.Heatmap(
        z=post, x=_time_axis(post.shape[1], post_frame_sec), y=labels, colorscale="Blues", zmin=0, zmax=1,
        colorbar=dict(title="p", len=0.6, y=0.32, thickness=10),
        hovertemplate="t = %{x:.2f} s<br>token '%{y}'<br>p = %{z:.3f}<extra></extra>"), row=2, col=1)
    fig.update_yaxes(title_text="mel", showticklabels=False, row=1, col=1)
    fig.update_yaxes(title_text="token", autorange="reversed", tickfont=dict(size=9), dtick=1, row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    return _layout(fig, title, 700)


def kl_heatmap(matrix: np.ndarray, frame_sec: float, title: str, names: Sequence[str],
               active: Optional[Sequence[bool]] = None, height: Optional[int] = None) -> go.Figure:
    """A [modules x frames] KL matrix; hover shows module, time and KL."""
    z = np.asarray(matrix, dtype=np.float32)
    labels = layer_labels(names, active)
    fig = go.Figure(go.Heatmap(
        z=z, x=_time_axis(z.shape[1], frame_sec), y=labels, colorscale="YlOrRd", zmin=0,
        colorbar=dict(title="KL", thickness=10),
        hovertemplate="Layer %{y}<br>t = %{x:.2f} s<br>KL = %{z:.4f} nats<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="layer", type="category", tickmode="array",
                     tickvals=labels, ticktext=labels)   # keep labels of all-blank (NaN) rows
    fig.update_xaxes(title_text="time (s)")
    return _layout(fig, title, height or max(240, 60 + 22 * z.shape[0]))


def pareto_front(points: pd.DataFrame, x: str = "gflops", y: str = "wer") -> pd.DataFrame:
    """Rows not dominated by any other (lower-or-equal cost and error, one strictly lower), sorted by cost."""
    pts = points.sort_values([x, y]).reset_index(drop=True)
    keep, best = [], np.inf
    for i, row in pts.iterrows():
        if row[y] < best - 1e-12:
            keep.append(i)
            best = row[y]
    return pts.loc[keep]


def wer_vs_gflops(df: pd.DataFrame, budget: Optional[float] = None,
                  recommended: Optional[tuple[float, float]] = None) -> go.Figure:
    """df columns: model, recipe, kept, gflops, wer (0..1). One line per model, Pareto front highlighted."""
    fig = go.Figure()
    for model, part in df.groupby("model", sort=False):
        part = part.sort_values("gflops")
        recipe = str(part["recipe"].iloc[0])
        fig.add_trace(go.Scatter(
            x=part["gflops"], y=part["wer"] * 100, mode="lines+markers", name=str(model),
            line=dict(color=RECIPE_COLORS.get(recipe, RECIPE_COLORS["unknown"]), width=2),
            marker=dict(size=7), customdata=part[["kept"]].to_numpy(),
            hovertemplate=f"<b>{model}</b><br>%{{customdata[0]}} layers kept<br>"
                          "%{x:.3f} GFLOPs<br>WER %{y:.1f}%<extra></extra>"))
    if len(df):
        front = pareto_front(df)
        fig.add_trace(go.Scatter(
            x=front["gflops"], y=front["wer"] * 100, mode="lines+markers", name="Pareto front",
            line=dict(color="#10b981", width=8, shape="hv"), opacity=0.35,
            marker=dict(size=14, symbol="circle-open", line=dict(width=2)), hoverinfo="skip"))
    if budget is not None:
        fig.add_vline(x=budget, line=dict(color="#ef4444", dash="dash"), annotation_text="budget",
                      annotation_position="top left")
    if recommended is not None:
        fig.add_trace(go.Scatter(x=[recommended[0]], y=[recommended[1] * 100], mode="markers",
                                 name="recommended", marker=dict(size=16, symbol="star", color="#ef4444"),
                                 hovertemplate="recommended<br>%{x:.3f} GFLOPs<br>WER %{y:.1f}%<extra></extra>"))
    fig.update_xaxes(title_text="GFLOPs per clip")
    fig.update_yaxes(title_text="WER (%)", rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return _layout(fig, "WER vs compute", 440)


def importance_bars(values: Sequence[float], names: Sequence[str], title: str, ylabel: str,
                    color: str = "#4f46e5") -> go.Figure:
    labels = list(names)
    fig = go.Figure(go.Bar(x=labels, y=list(values), marker_color=color,
                           hovertemplate="Layer %{x}<br>" + ylabel + " %{y:.4f}<extra></extra>"))
    fig.update_yaxes(title_text=ylabel, zeroline=True)
    fig.update_xaxes(title_text="layer dropped", type="category")
    return _layout(fig, title, 320)


def greedy_path_chart(steps: pd.DataFrame) -> go.Figure:
    """steps columns: step, dropped (label), kept, metric. Line of the metric as layers are dropped."""
    fig = go.Figure(go.Scatter(
        x=steps["kept"], y=steps["metric"], mode="lines+markers+text", text=steps["dropped"],
        textposition="top center", line=dict(color="#4f46e5"),
        hovertemplate="%{x} layers kept<br>dropped %{text}<br>%{y:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="layers kept", autorange="reversed", dtick=1)
    fig.update_yaxes(title_text=str(steps.attrs.get("metric_name", "metric")))
    return _layout(fig, "Greedy drop path", 340)


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame) -> go.Figure:
    """steps: step, loss (+ ctc, kl); epochs: step, valid_wer (0..1). Loss on the left axis, WER on the right."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for col, color in (("loss", "#4f46e5"), ("ctc", "#0ea5e9"), ("kl", "#f59e0b")):
        if col in steps and steps[col].notna().any():
            fig.add_trace(go.Scatter(x=steps["step"], y=steps[col], name=col, mode="lines",
                                     line=dict(color=color, width=2 if col == "loss" else 1)), secondary_y=False)
    if len(epochs) and "valid_wer" in epochs and epochs["valid_wer"].notna().any():
        fig.add_trace(go.Scatter(x=epochs["step"], y=epochs["valid_wer"] * 100, name="valid WER (%)",
                                 mode="lines+markers", line=dict(color="#ef4444", dash="dot")), secondary_y=True)
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False)
    fig.update_yaxes(title_text="WER (%)", secondary_y=True, rangemode="tozero")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, "Training curves", 380)
