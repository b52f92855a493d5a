"""Plotly figures used by the pages. Pure functions of numpy arrays / pandas frames: no model math here."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import plotly.colors as _pc
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# One colour per recipe, reused by every chart so "DLD" always looks the same.
RECIPE_COLORS = {"teacher": "#0f172a", "ld": "#f59e0b", "dld": "#4f46e5", "unknown": "#64748b"}
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


# Explicit (dark -> bright) scale for the spectrogram: first entry = the lowest energy = the darkest colour.
SPECTROGRAM_COLORS = [[i / (len(_pc.sequential.Magma) - 1), c] for i, c in enumerate(_pc.sequential.Magma)]


def spectrogram_posteriorgram(logmel: np.ndarray, mel_frame_sec: float, posteriors: np.ndarray,
                              post_frame_sec: float, vocab: Sequence[str], title: str = "") -> go.Figure:
    """logmel [T, n_mels] on top; the CTC posteriorgram [T', V] (probabilities) under it, same time axis."""
    spec, spec_sec = _decimate(np.asarray(logmel, dtype=np.float32).T, mel_frame_sec, 800)
    post = np.asarray(posteriors, dtype=np.float32).T                              # [V, T']
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.32, 0.68],
                        subplot_titles=("Log-mel spectrogram", "CTC posteriorgram (student, current mask)"))
    # Silence is the quietest energy: pin the scale to the data so its minimum is Magma's darkest colour
    # (the page also draws this chart with theme=None, so no chart theme swaps the scale).
    finite = spec[np.isfinite(spec)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig.add_trace(go.Heatmap(
        z=spec, x=_time_axis(spec.shape[1], spec_sec), y=np.arange(spec.shape[0]), colorscale=SPECTROGRAM_COLORS,
        zmin=lo, zmax=hi if hi > lo else lo + 1.0, showscale=False,
        hovertemplate="t = %{x:.2f} s<br>mel bin %{y}<br>%{z:.2f}<extra></extra>"), row=1, col=1)
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
        colorbar=dict(title="KL (nats)", thickness=10),
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


WER_CAP_NOTE = ("Points above 100% are drawn at the cap (▲): WER counts inserted words too, so a model that "
                "outputs many wrong words can score over 100%. Hover a point for its value.")


def wer_vs_gflops(df: pd.DataFrame, budget: Optional[float] = None,
                  recommended: Optional[tuple[float, float]] = None, title: str = "WER vs compute",
                  cap: Optional[float] = 1.0) -> go.Figure:
    """df columns: model, recipe, kept, gflops, wer (0..1). One line per model, Pareto front highlighted.
    WER is drawn up to `cap` (0..1; None = no cap): points above it sit on the cap as triangles, the hover
    shows their value, and the chart says so (WER_CAP_NOTE)."""
    def capped(values) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        return values if cap is None else np.minimum(values, cap)

    fig = go.Figure()
    for model, part in df.groupby("model", sort=False):
        part = part.sort_values("gflops")
        recipe = str(part["recipe"].iloc[0])
        above = part["wer"].to_numpy(dtype=float) > cap if cap is not None else np.zeros(len(part), bool)
        fig.add_trace(go.Scatter(
            x=part["gflops"], y=capped(part["wer"]) * 100, mode="lines+markers", name=str(model),
            line=dict(color=RECIPE_COLORS.get(recipe, RECIPE_COLORS["unknown"]), width=2),
            marker=dict(size=[10 if a else 7 for a in above], symbol=["triangle-up" if a else "circle" for a in above]),
            customdata=np.column_stack([part["kept"].to_numpy(), part["wer"].to_numpy(dtype=float) * 100]),
            hovertemplate=f"<b>{model}</b><br>%{{customdata[0]}} modules kept<br>"
                          "%{x:.3f} GFLOPs<br>WER %{customdata[1]:.1f}%<extra></extra>"))
    if len(df):
        front = pareto_front(df)
        fig.add_trace(go.Scatter(
            x=front["gflops"], y=capped(front["wer"]) * 100, mode="lines+markers", name="Pareto front",
            line=dict(color="#10b981", width=8, shape="hv"), opacity=0.35,
            marker=dict(size=14, symbol="circle-open", line=dict(width=2)), hoverinfo="skip"))
    if budget is not None:
        fig.add_vline(x=budget, line=dict(color="#ef4444", dash="dash"), annotation_text="budget",
                      annotation_position="top left")
    if recommended is not None:
        fig.add_trace(go.Scatter(x=[recommended[0]], y=capped([recommended[1]]) * 100, mode="markers",
                                 name="recommended", marker=dict(size=16, symbol="star", color="#ef4444"),
                                 customdata=[[recommended[1] * 100]],
                                 hovertemplate="recommended<br>%{x:.3f} GFLOPs<br>WER %{customdata[0]:.1f}%<extra></extra>"))
    fig.update_xaxes(title_text="GFLOPs per 10 s clip")
    fig.update_yaxes(title_text="WER (%)", rangemode="tozero", ticksuffix="%")
    if cap is not None and len(df):
        top = min(float(df["wer"].max()), cap) * 100
        fig.update_yaxes(range=[0, max(top, 1.0) * 1.08])
        if (df["wer"] > cap).any():
            fig.add_annotation(text=f"▲ above {cap * 100:.0f}%: drawn at the cap (WER can exceed 100%)",
                               xref="paper", yref="paper", x=1, y=1.0, xanchor="right", yanchor="bottom",
                               showarrow=False, font=dict(size=11, color="#64748b"))
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return _layout(fig, title, 440)


def importance_bars(values, names: Sequence[str], title: str, ylabel: str, color: str = "#4f46e5",
                    intervals=None, colors: Optional[dict] = None) -> go.Figure:
    """Drop-one bars, one per module. values: one list (a single series) or {series name: list} (grouped bars,
    e.g. LD and DLD side by side, same axis); None entries (modules already off) draw no bar.
    intervals: the same shape, (low, high) per module (or None): drawn as error bars.
    Every module label stays whole: category axis, horizontal ticks, automargin."""
    series = values if isinstance(values, dict) else {"": values}
    intervals = (intervals if isinstance(intervals, dict) else {"": intervals}) if intervals is not None else {}
    colors = colors or {}
    palette = [color, "#f59e0b", "#10b981", "#ef4444"]
    labels = list(names)
    fig = go.Figure()
    for j, (name, vals) in enumerate(series.items()):
        y = [None if v is None else float(v) for v in vals]
        error_y = None
        ci = intervals.get(name)
        if ci is not None:
            plus = [None if v is None or c is None else max(0.0, c[1] - v) for v, c in zip(y, ci)]
            minus = [None if v is None or c is None else max(0.0, v - c[0]) for v, c in zip(y, ci)]
            error_y = dict(type="data", symmetric=False, array=plus, arrayminus=minus, color="#334155",
                           thickness=1.2, width=4)
        prefix = f"{name}<br>" if name else ""
        fig.add_trace(go.Bar(x=labels, y=y, name=name or ylabel, marker_color=colors.get(name, palette[j % len(palette)]),
                             error_y=error_y, showlegend=bool(name),
                             hovertemplate=prefix + "Module %{x}<br>" + ylabel + " %{y:.4f}<extra></extra>"))
    fig.update_yaxes(title_text=ylabel, zeroline=True, zerolinecolor="#64748b", automargin=True)
    fig.update_xaxes(title_text="module dropped", type="category", categoryorder="array", categoryarray=labels,
                     tickangle=0, automargin=True)
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    fig = _layout(fig, title, 340)
    fig.update_layout(margin=dict(l=10, r=10, t=60, b=10))
    return fig


def greedy_path_chart(steps: pd.DataFrame, colors: Optional[dict] = None) -> go.Figure:
    """steps columns: step, dropped (label), kept, metric (+ model: one line per model). The metric as
    modules are dropped."""
    groups = list(steps.groupby("model", sort=False)) if "model" in steps else [("", steps)]
    colors = colors or {}
    palette = ["#4f46e5", "#f59e0b", "#10b981", "#ef4444"]
    fig = go.Figure()
    for j, (name, part) in enumerate(groups):
        # labels alternate above and below the points (and between models), so neighbours never overlap
        where = [("top center", "bottom center")[(i + j) % 2] for i in range(len(part))]
        fig.add_trace(go.Scatter(
            x=part["kept"], y=part["metric"], mode="lines+markers+text", text=part["dropped"], name=str(name),
            textposition=where, cliponaxis=False, line=dict(color=colors.get(name, palette[j % len(palette)])),
            showlegend=bool(name),
            hovertemplate=(f"{name}<br>" if name else "") + "%{x} modules kept<br>dropped %{text}<br>%{y:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="modules kept", autorange="reversed", dtick=1, automargin=True)
    fig.update_yaxes(title_text=str(steps.attrs.get("metric_name", "metric")), automargin=True)
    fig.update_layout(legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return _layout(fig, "Greedy drop path", 340)


def nice_ticks(top: float, most: int = 6) -> list[float]:
    """At most `most` ticks 0, d, 2d, ... up to the first one at or above `top`, d = 1, 2, 2.5 or 5 times a power
    of ten: an axis from 0 to the last tick shows every value in [0, top] on round numbers."""
    top = max(float(top), 1e-9)
    base = 10.0 ** np.floor(np.log10(top / (most - 1)))
    step = next(base * m for m in (1, 2, 2.5, 5, 10) if np.ceil(top / (base * m) - 1e-9) <= most - 1)
    return [float(round(step * i, 12)) for i in range(int(np.ceil(top / step - 1e-9)) + 1)]


def training_curves(steps: pd.DataFrame, epochs: pd.DataFrame, recipe: Optional[str] = None) -> go.Figure:
    """steps: step, loss (+ ctc, kl); epochs: step, valid_wer (0..1). Loss on the left axis, WER (%) on the
    right. No KL line for a teacher (its recipe has no distillation) or when every KL is 0."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for col, color in (("loss", "#4f46e5"), ("ctc", "#0ea5e9"), ("kl", "#f59e0b")):
        if col not in steps or not steps[col].notna().any():
            continue
        if col == "kl" and (recipe == "teacher" or not (steps[col].fillna(0).abs() > 0).any()):
            continue
        if col == "ctc" and "loss" in steps and np.allclose(steps["ctc"], steps["loss"], equal_nan=True):
            continue                                          # CTC only (a teacher): the loss line says it all
        fig.add_trace(go.Scatter(x=steps["step"], y=steps[col], name=col, mode="lines",
                                 line=dict(color=color, width=2 if col == "loss" else 1)), secondary_y=False)
    wer_ticks = nice_ticks(1.0)
    if len(epochs) and "valid_wer" in epochs and epochs["valid_wer"].notna().any():
        fig.add_trace(go.Scatter(x=epochs["step"], y=epochs["valid_wer"] * 100, name="valid WER",
                                 mode="lines+markers", line=dict(color="#ef4444", dash="dot"),
                                 hovertemplate="step %{x}<br>valid WER %{y:.1f}%<extra></extra>"), secondary_y=True)
        wer_ticks = nice_ticks(max(1.0, epochs["valid_wer"].max() * 100))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss", secondary_y=False, nticks=6)
    # WER on round ticks from 0 to the first tick at or above the worst epoch (a little room for its marker)
    fig.update_yaxes(title_text="valid WER", secondary_y=True, range=[0, wer_ticks[-1] * 1.04], tickmode="array",
                     tickvals=wer_ticks, tickformat="~g", ticksuffix="%", showgrid=False)
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    return _layout(fig, "Training curves", 380)
