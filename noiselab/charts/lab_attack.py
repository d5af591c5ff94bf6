"""Charts of the lab's attack panel: robust accuracy against ε with a movable ε marker, and clean/adversarial images.

    >>> chart = robust_accuracy_chart(curves, eps=0.1)          # curves: model, eps, accuracy
    >>> jchart = jupyter_chart(chart); jchart.params.eps = 0.2   # the rule moves in the browser, nothing recomputed
    >>> png = example_grid_png(clean, adversarial, labels, clean_pred, adversarial_pred, classes)

Pure functions: tables and arrays in, an Altair chart or PNG bytes out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

EPS_PARAM = "eps"  # the chart's parameter: the vertical rule's position, set from the panel's ε slider
CURVE_COLUMNS = ("model", "eps", "accuracy")


def robust_accuracy_chart(curves: pd.DataFrame, eps: float = 0.0, eps_max: float | None = None,
                          eps_title: str = "ε (L∞ attack budget)") -> alt.LayerChart:
    """Robust accuracy against ε, one line per model, and a vertical rule at the parameter `eps`.

    The rule reads the Vega parameter EPS_PARAM, so a JupyterChart moves it when `jchart.params.eps` is assigned,
    without sending the data again. `eps_max` fixes the x range, so that the axis does not jump when models are
    added or the rule moves past the data.
    """
    missing = [c for c in CURVE_COLUMNS if c not in curves.columns]
    if missing:
        raise ValueError(f"curves lacks the columns {missing}; it needs {CURVE_COLUMNS}")
    if eps_max is None:
        eps_max = float(curves["eps"].max()) if len(curves) else 0.5
    x_scale = alt.Scale(domain=[0, max(eps_max, float(eps))])
    marker = alt.param(name=EPS_PARAM, value=float(eps))
    lines = alt.Chart(curves[list(CURVE_COLUMNS)]).mark_line(point=True).encode(
        x=alt.X("eps:Q", title=eps_title, scale=x_scale),
        y=alt.Y("accuracy:Q", title="robust accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("model:N", title="model", legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
        tooltip=["model:N", alt.Tooltip("eps:Q", format=".3f"), alt.Tooltip("accuracy:Q", format=".3f")],
    )
    # one dummy row; the rule's x is computed from the parameter in the browser
    rule = alt.Chart(pd.DataFrame({"row": [0]})).transform_calculate(marker=EPS_PARAM).mark_rule(
        color="#d62728", strokeDash=[4, 3], size=2).encode(x=alt.X("marker:Q", scale=x_scale))
    return alt.layer(lines, rule).add_params(marker).properties(width=420, height=300,
                                                                 title="Robust accuracy against ε")


def _to_uint8(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (N, H, W, C) bytes."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C = 1 or 3, got shape {images.shape}")
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def example_grid_png(
    clean: np.ndarray,
    adversarial: np.ndarray,
    labels: Sequence[int],
    clean_predictions: Sequence[int],
    adversarial_predictions: Sequence[int],
    classes: Sequence[str],
    scale: int = 3,
) -> bytes:
    """A PNG: clean images on the top row, their adversarial versions below, each captioned with its prediction.

    Images are (N, C, H, W) in [0, 1]. A caption is green when the prediction is the label and red otherwise;
    the clean row also gives the label.
    """
    clean_bytes, adversarial_bytes = _to_uint8(clean), _to_uint8(adversarial)
    if clean_bytes.shape != adversarial_bytes.shape:
        raise ValueError(f"clean {clean_bytes.shape} and adversarial {adversarial_bytes.shape} images differ in shape")
    count, height, width, channels = clean_bytes.shape
    if not (len(labels) == len(clean_predictions) == len(adversarial_predictions) == count):
        raise ValueError("labels and both predictions need one entry per image")
    font = ImageFont.load_default()
    cell_w, cell_h, caption = max(width * scale, 72), height * scale, 14
    margin = 64  # room for the row titles on the left
    canvas = Image.new("RGB", (margin + count * (cell_w + 4), 2 * (cell_h + caption + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    rows = (("clean", clean_bytes, clean_predictions), ("attacked", adversarial_bytes, adversarial_predictions))
    for row, (title, images, predictions) in enumerate(rows):
        top = row * (cell_h + caption + 6)
        draw.text((4, top + cell_h // 2 - 6), title, fill="black", font=font)
        for i in range(count):
            pixels = images[i, :, :, 0] if channels == 1 else images[i]  # (H, W) is read as grey, (H, W, 3) as RGB
            tile = Image.fromarray(np.ascontiguousarray(pixels)).resize((width * scale, height * scale),
                                                                         Image.Resampling.NEAREST)
            left = margin + i * (cell_w + 4)
            canvas.paste(tile.convert("RGB"), (left + (cell_w - width * scale) // 2, top))
            predicted, label = int(predictions[i]), int(labels[i])
            text = f"{classes[predicted]}" if row else f"{classes[predicted]} ({classes[label]})"
            draw.text((left, top + cell_h + 2), text[:14], fill="#1a7f37" if predicted == label else "#c62828",
                      font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
