"""What `asen scan` draws and writes for a person: thumbnails with the attribute's attention map and
RoI box over them, the static HTML report (no script: it opens from disk) and the CSV of matches; for
`asen scan --copies`, the same with every attribute's score per match, which details are copied and
which changed, and the copied attributes' attention over the design and the match."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from asen_search.model.encoder import Explanation

WORK_DIR = ".scan"  # OUT/.scan/: the resumable state (plan, catalogue state, one record per design)
PICTURES_DIR = "report_files"  # OUT/report_files/: every picture report.html shows, named relative to it
THUMB = 224


def overlay(image: Image.Image, found: Explanation, size: int = THUMB) -> Image.Image:
    """A thumbnail of `image` with the attention map (stretched over the model's view of the image)
    blended in and the RoI box drawn."""
    import matplotlib

    scale = min(1.0, size / max(image.size))
    thumb = image.convert("RGB").resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.LANCZOS
    )
    x0, y0, x1, y1 = (v * scale for v in found.image_box)
    width, height = max(1, round(x1 - x0)), max(1, round(y1 - y0))
    colours = (matplotlib.colormaps["jet"](found.attention)[..., :3] * 255).astype(np.uint8)
    heat = Image.fromarray(colours).resize((width, height), Image.Resampling.BILINEAR)
    alpha = Image.fromarray((np.sqrt(found.attention) * 170).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
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
.copies .matches{flex:1;align-items:flex-start}
figure.copy{width:440px;display:grid;grid-template-columns:150px 1fr;gap:.3rem .6rem;align-items:start;align-content:start}
figure.copy>figcaption{grid-column:1/-1;margin:0 0 .2rem}figure.copy>img{width:150px}
figure.copy>.changed-list,figure.copy>.unjudged-note,figure.copy>.pairs{grid-column:1/-1}
.breakdown{border-collapse:collapse;font-size:.8rem}
.breakdown th,.breakdown td{padding:.05rem .5rem .05rem 0;text-align:left}.breakdown td.num{font-variant-numeric:tabular-nums}
tr.counted td.score{font-weight:600}.status{font-weight:600}
tr.copied .status{color:#075}tr.changed .status{color:#a40}tr.changed{background:#fff3e6}tr.not-judged .status{color:#666}
.pairs{display:flex;flex-wrap:wrap;gap:.4rem}.pair{font-size:.75rem;border:1px solid #cfe8dc;border-radius:4px;padding:.2rem}
.pair img{width:96px}.changed-list{color:#a40;font-size:.8rem;margin:0}
.changed-list.nochange,.unjudged-note{color:#666;font-size:.8rem;margin:0}
"""


def _img(name: str, alt: str) -> str:
    """A picture of `PICTURES_DIR`, by a path relative to the report: the report, its CSV, summary and
    that folder copied anywhere together still show every picture."""
    return f'<img src="{html.escape(PICTURES_DIR + "/" + name)}" alt="{html.escape(alt)}" loading="lazy">'


def report_html(
    attribute: str,
    min_precision: float | None,
    max_results: int,
    records: list[dict[str, Any]],
    min_score: float,
) -> str:
    """A static page (no script): per design, its pictures and every match's, with score and precision."""
    esc = html.escape
    threshold = f"score &ge; {min_score:.4f}" + (
        f" (estimated precision &ge; {min_precision:g})" if min_precision is not None else ""
    )
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Design scan: {esc(attribute)}"
        f"</title><style>{_STYLE}</style></head><body>",
        f"<h1>Design scan &mdash; attribute <code>{esc(attribute)}</code></h1>",
        f"<p class='meta'>{len(records)} designs, {threshold}, at most {max_results} matches each. Each "
        "picture is shown plain and with the attribute's attention map and RoI box (yellow) over it.</p>",
    ]
    for r in records:
        parts.append(f"<section class='design' id='design-{esc(r['design'])}'>")
        if "error" in r:
            parts.append(
                f"<div><h2>{esc(r['design'])}</h2><p class='warn'>unreadable: {esc(r['error'])}</p></div>"
                "</section>"
            )
            continue
        matches = r["matches"]
        note = " (cut at max_results: more items pass)" if r.get("truncated") else ""
        parts.append(
            f"<div class='protected'><h2>{esc(r['design'])}</h2>{_img(r['thumb'], 'design ' + r['design'])}"
            f"{_img(r['why'], 'design attention ' + r['design'])}<p class='meta'>{len(matches)} matches"
            f"{note}</p></div><div class='matches'>"
        )
        if not matches:
            parts.append("<p class='none'>no catalogue item at or above the threshold</p>")
        for m in matches:
            precision = "" if m["precision"] is None else f", est. precision {m['precision']:.2f}"
            pictures = (
                _img(m["thumb"], "match " + m["id"]) + _img(m["why"], "match attention " + m["id"])
                if "thumb" in m
                else f"<p class='warn'>{esc(m.get('image_error', 'no image'))}</p>"
            )
            parts.append(
                f"<figure class='match' data-id='{esc(m['id'])}'>{pictures}<figcaption>{esc(m['id'])}<br>"
                f"score {m['score']:.4f}{precision}</figcaption></figure>"
            )
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "".join(parts)


COPY_COLUMNS = ("design", "item_id", "score", "modified")
COPIED, CHANGED, UNJUDGED = "copied", "changed", "not judged"


def attribute_column(attribute: str) -> str:
    """An attribute's score column in a copies `matches.csv`: its name, unless that is a fixed column's."""
    return f"score:{attribute}" if attribute in COPY_COLUMNS else attribute


def copies_csv_text(
    attributes: Sequence[str],
    rows: list[tuple[str, str, float, Mapping[str, float], Sequence[str]]],
    verified: Sequence[tuple[float, int | None]] | None = None,
) -> str:
    """`design, item_id, score, <one column per attribute>, modified` (the judged-modified attributes
    joined by ';'); a verified scan (`verified`: each row's copy score and inliers, None: not verified)
    adds `copy_score, inliers`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["copy_score", "inliers"] if verified is not None else []
    writer.writerow(
        ["design", "item_id", "score", *(attribute_column(a) for a in attributes), "modified", *extra]
    )
    for n, (design, item, score, scores, modified) in enumerate(rows):
        cells = [design, item, f"{score:.6f}", *(f"{scores[a]:.6f}" for a in attributes), ";".join(modified)]
        if verified is not None:
            copy_score, inliers = verified[n]
            cells += [f"{copy_score:.6f}", "" if inliers is None else str(inliers)]
        writer.writerow(cells)
    return buffer.getvalue()


def counted_attributes(scores: Mapping[str, float], kept: int) -> list[str]:
    """The attributes whose scores the copy score averages (the best `kept`), in attribute order."""
    best = set(sorted(scores, key=lambda a: -scores[a])[:kept])
    return [a for a in scores if a in best]


def attribute_status(attribute: str, score: float, changed_below: Mapping[str, float] | None) -> str:
    """Copied (at or above the attribute's calibrated line), changed (below: judged modified) or not
    judged (no calibration, or none for this attribute)."""
    if not changed_below or attribute not in changed_below:
        return UNJUDGED
    return COPIED if score >= changed_below[attribute] else CHANGED


def overlay_attributes(
    scores: Mapping[str, float], changed_below: Mapping[str, float] | None, kept: int
) -> list[str]:
    """The attributes whose attention a match's report shows: the copied ones; with no calibrated
    lines, the ones the copy score counts."""
    if not changed_below:
        return counted_attributes(scores, kept)
    return [a for a in scores if attribute_status(a, scores[a], changed_below) == COPIED]


def _breakdown(
    m: dict[str, Any], attributes: Sequence[str], changed_below: Mapping[str, float] | None, kept: int
) -> str:
    esc = html.escape
    counted = set(counted_attributes(m["scores"], kept))
    rows = ["<table class='breakdown'><tr><th>attribute</th><th>score</th><th>line</th><th>detail</th></tr>"]
    for a in attributes:
        score = m["scores"][a]
        status = attribute_status(a, score, changed_below)
        line = f"{changed_below[a]:.4f}" if changed_below and a in changed_below else "&ndash;"
        rows.append(
            f"<tr class='attr {status.replace(' ', '-')}{' counted' if a in counted else ''}' "
            f"data-attribute='{esc(a)}' data-status='{esc(status)}'><td>{esc(a)}</td>"
            f"<td class='num score'>{score:.4f}</td><td class='num'>{line}</td><td class='status'>{status}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def copies_report_html(
    records: list[dict[str, Any]],
    attributes: Sequence[str],
    modified: int,
    changed_below: Mapping[str, float] | None,
    min_score: float,
    max_false_match_rate: float | None,
    max_results: int,
) -> str:
    """The static page of a copies scan: per design, its copies best first, each with its copy score,
    every attribute's score against the line that says copied or changed, and the copied attributes'
    attention over the design and the match. `changed_below` None: no calibration, nothing judged."""
    esc = html.escape
    kept = max(1, len(attributes) - modified)
    threshold = f"copy score &ge; {min_score:.4f}" + (
        f" (estimated false-match rate &le; {max_false_match_rate:g})"
        if max_false_match_rate is not None
        else ""
    )
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Copy scan</title><style>{_STYLE}"
        "</style></head><body><h1>Copy scan &mdash; every attribute</h1>",
        f"<p class='meta'>{len(records)} designs, {threshold}, up to {modified} of {len(attributes)} attributes "
        f"modified, at most {max_results} matches each. The copy score is the mean of a match's best {kept} "
        "attribute scores (bold in its table). ",
        "Each attribute is <b>copied</b> when it scores at or above its line, <b>changed</b> (judged modified) "
        "below it (lines from <code>asen calibrate-copies</code>); the attention map and RoI box (yellow) of "
        "every copied attribute are drawn over the design and the match.</p>"
        if changed_below is not None
        else "</p><p class='warn nocalibration'>No copy calibration beside the checkpoint: the attributes could not "
        "be judged copied or changed (run <code>asen calibrate-copies</code>). The attention maps shown are those "
        "of the attributes the copy score counts.</p>",
    ]
    for r in records:
        parts.append(f"<section class='design copies' id='design-{esc(r['design'])}'>")
        if "error" in r:
            parts.append(
                f"<div><h2>{esc(r['design'])}</h2><p class='warn'>unreadable: {esc(r['error'])}</p></div>"
                "</section>"
            )
            continue
        matches = r["matches"]
        note = " (cut at max_results: more items pass)" if r.get("truncated") else ""
        parts.append(
            f"<div class='protected'><h2>{esc(r['design'])}</h2>{_img(r['thumb'], 'design ' + r['design'])}"
            f"<p class='meta'>{len(matches)} {'copy' if len(matches) == 1 else 'copies'}{note}</p></div>"
            "<div class='matches'>"
        )
        if not matches:
            parts.append("<p class='none'>no catalogue item at or above the threshold</p>")
        for m in matches:
            statuses = [attribute_status(a, m["scores"][a], changed_below) for a in attributes]
            verdict = (
                f"{statuses.count(COPIED)} of {len(attributes)} attributes copied, {statuses.count(CHANGED)} "
                "changed"
                if changed_below is not None
                else "attributes not judged (no calibration)"
            )
            if "thumb" in m:
                pairs = "".join(
                    f"<div class='pair' data-attribute='{esc(a)}'><div>{esc(a)}: design | match</div>"
                    f"{_img(r['why'][a], f'design attention {a} ' + r['design'])}"
                    f"{_img(name, f'match attention {a} ' + m['id'])}</div>"
                    for a, name in m["why"].items()
                )
                pictures = _img(m["thumb"], "match " + m["id"])
            else:
                pairs, pictures = "", f"<p class='warn'>{esc(m.get('image_error', 'no image'))}</p>"
            if changed_below is None:
                changes = "<p class='unjudged-note'>copied or changed: not judged</p>"
            elif m["modified"]:
                changes = (
                    "<p class='changed-list'>changed: "
                    + ", ".join(
                        f"{esc(a)} ({m['scores'][a]:.4f} &lt; {changed_below[a]:.4f})" for a in m["modified"]
                    )
                    + "</p>"
                )
            else:
                changes = "<p class='changed-list nochange'>changed: none</p>"
            verified, label = "", "copy score"
            if "copy_score" in m:  # a verified scan: the score adds the verification's share
                label = "score"
                verified = (
                    f" (copy score {m['copy_score']:.4f}, {m['inliers']} matching points)"
                    if m["inliers"] is not None
                    else f" (copy score {m['copy_score']:.4f}, not verified)"
                )
            parts.append(
                f"<figure class='match copy' data-id='{esc(m['id'])}'><figcaption>{esc(m['id'])}<br>"
                f"{label} {m['score']:.4f}{verified} &mdash; {verdict}</figcaption>{pictures}"
                f"{_breakdown(m, attributes, changed_below, kept)}{changes}<div class='pairs'>{pairs}</div>"
                "</figure>"
            )
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "".join(parts)
