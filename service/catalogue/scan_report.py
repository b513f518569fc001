"""What `asen scan` draws and writes for a person: thumbnails with the attribute's attention map and
RoI box over them, the static HTML report (no script: it opens from disk) and the CSV of matches."""
from __future__ import annotations

import csv
import html
import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from asen_search.model.encoder import Explanation

WORK_DIR = ".scan"           # OUT/.scan/: the resumable state (plan, catalogue state, one record per design)
PICTURES_DIR = "report_files"  # OUT/report_files/: every picture report.html shows, named relative to it
THUMB = 224


def overlay(image: Image.Image, found: Explanation, size: int = THUMB) -> Image.Image:
    """A thumbnail of `image` with the attention map (stretched over the model's view of the image)
    blended in and the RoI box drawn."""
    import matplotlib

    scale = min(1.0, size / max(image.size))
    thumb = image.convert("RGB").resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                        Image.Resampling.LANCZOS)
    x0, y0, x1, y1 = (v * scale for v in found.image_box)
    width, height = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    colours = (matplotlib.colormaps["jet"](found.attention)[..., :3] * 255).astype(np.uint8)
    heat = Image.fromarray(colours).resize((width, height), Image.Resampling.BILINEAR)
    alpha = Image.fromarray((np.sqrt(found.attention) * 170).astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    layer = Image.new("RGBA", thumb.size, (0, 0, 0, 0))
    layer.paste(Image.merge("RGBA", (*heat.split(), alpha)), (round(x0), round(y0)))
    picture = Image.alpha_composite(thumb.convert("RGBA"), layer).convert("RGB")
    if found.roi_box is not None:
        box = [v * scale for v in found.roi_box]
        ImageDraw.Draw(picture).rectangle(box, outline=(255, 255, 0), width=max(2, size // 112))
    return picture


def thumbnail(image: Image.Image, size: int = THUMB) -> Image.Image:
    picture = image.convert("RGB")
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    return picture


def csv_text(rows: list[tuple[str, str, float, float | None]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["design", "item_id", "score", "estimated_precision"])
    for design, item, score, precision in rows:
        writer.writerow([design, item, f"{score:.6f}", "" if precision is None else f"{precision:.4f}"])
    return buffer.getvalue()


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin:0 0 .5rem}
.design{display:flex;gap:1.5rem;align-items:flex-start;background:#fff;border:1px solid #ddd;border-radius:8px;
padding:1rem;margin:1rem 0}
.protected{flex:0 0 auto;width:240px}.matches{display:flex;flex-wrap:wrap;gap:.75rem}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:.4rem;width:232px}
figure img{width:112px;height:auto;vertical-align:top}figcaption{font-size:.8rem;margin-top:.3rem;word-break:break-all}
.none{color:#666}.warn{color:#a40}.meta{color:#555;font-size:.9rem}
"""


def _img(name: str, alt: str) -> str:
    """A picture of `PICTURES_DIR`, by a path relative to the report: the report, its CSV, summary and
    that folder copied anywhere together still show every picture."""
    return f'<img src="{html.escape(PICTURES_DIR + "/" + name)}" alt="{html.escape(alt)}" loading="lazy">'


def report_html(attribute: str, min_precision: float | None, max_results: int, records: list[dict[str, Any]],
                min_score: float) -> str:
    """A static page (no script): per design, its pictures and every match's, with score and precision."""
    esc = html.escape
    threshold = f"score &ge; {min_score:.4f}" + (f" (estimated precision &ge; {min_precision:g})"
                                                 if min_precision is not None else "")
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Design scan: {esc(attribute)}"
             f"</title><style>{_STYLE}</style></head><body>",
             f"<h1>Design scan &mdash; attribute <code>{esc(attribute)}</code></h1>",
             f"<p class='meta'>{len(records)} designs, {threshold}, at most {max_results} matches each. Each "
             "picture is shown plain and with the attribute's attention map and RoI box (yellow) over it.</p>"]
    for r in records:
        parts.append(f"<section class='design' id='design-{esc(r['design'])}'>")
        if "error" in r:
            parts.append(f"<div><h2>{esc(r['design'])}</h2><p class='warn'>unreadable: {esc(r['error'])}</p></div>"
                         "</section>")
            continue
        matches = r["matches"]
        note = " (cut at max_results: more items pass)" if r.get("truncated") else ""
        parts.append(f"<div class='protected'><h2>{esc(r['design'])}</h2>{_img(r['thumb'], 'design ' + r['design'])}"
                     f"{_img(r['why'], 'design attention ' + r['design'])}<p class='meta'>{len(matches)} matches"
                     f"{note}</p></div><div class='matches'>")
        if not matches:
            parts.append("<p class='none'>no catalogue item at or above the threshold</p>")
        for m in matches:
            precision = "" if m["precision"] is None else f", est. precision {m['precision']:.2f}"
            pictures = (_img(m["thumb"], "match " + m["id"]) + _img(m["why"], "match attention " + m["id"])
                        if "thumb" in m else f"<p class='warn'>{esc(m.get('image_error', 'no image'))}</p>")
            parts.append(f"<figure class='match' data-id='{esc(m['id'])}'>{pictures}<figcaption>{esc(m['id'])}<br>"
                         f"score {m['score']:.4f}{precision}</figcaption></figure>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "".join(parts)
