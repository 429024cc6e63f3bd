"""The analysis as files a person opens: analysis.json (every number) and
report.html, one self-contained page that opens offline and can be mailed.

The page holds no script and loads nothing: styles are inline, plots and
images are PNG data URIs, and its Content-Security-Policy forbids any other
source. Everything that comes from the data (class names, file names) is
escaped by the template engine (jinja2 with autoescape), so a class named
`<img src=x onerror=alert(1)>` is shown as that text.
"""
from __future__ import annotations

import os
from typing import Union

from ..io.jsonio import atomic_write, write_json_atomic
from . import _report_plots as plots
from .analysis import Analysis

# The CSP blocks any request and any script even if escaping failed somewhere.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
SECTIONS = ("headline", "errors", "confusion", "pr-curves", "classes", "worst")

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>detkit evaluation report</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header { background: #1f2a44; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 24px 48px; }
section { background: #fff; border-radius: 8px; padding: 16px 24px; margin: 18px 0; box-shadow: 0 1px 3px #0002; }
h2 { font-size: 18px; margin: 4px 0 12px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 9px; border-bottom: 1px solid #e3e5e8; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #f0f2f5; border-radius: 6px; padding: 8px 14px; min-width: 72px; }
.card b { display: block; font-size: 20px; }
.note { color: #555; font-size: 13px; }
.wide { overflow-x: auto; }
img.plot { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 14px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; border: 1px solid #ccc; }
figcaption { font-size: 12px; color: #444; word-break: break-all; }
.key span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 22px; height: 0; vertical-align: middle; margin-right: 4px; }
</style>
</head>
<body>
<header>
<h1>detkit evaluation report</h1>
<div>{{ a.iou_type }} &middot; {{ a.num_images }} images &middot; {{ a.classes|length }} classes &middot;
TIDE thresholds: foreground {{ a.fg_iou }}, background {{ a.bg_iou }}</div>
</header>
<main>
<section id="headline">
<h2>Headline metrics</h2>
<div class="cards">
{% for name, value in a.metrics.stats.items() %}<div class="card">{{ name }}<b>{{ value|pct }}</b></div>
{% endfor %}</div>
<p>Biggest error type: <b>{{ biggest }}</b> (ΔAP {{ a.errors["AP"][biggest_key]|pct }} over IoU .50:.95)
{%- if biggest_fg_key != biggest_key %}; at IoU {{ a.fg_iou }}: <b>{{ biggest_fg }}</b>
(ΔAP {{ a.errors[a.fg_key][biggest_fg_key]|pct }}){% endif %}.
{% if confused %}Most confused pair: <b>{{ confused[0][0] }}</b> taken for <b>{{ confused[0][1] }}</b>
({{ confused[0][2] }} of its objects, at score &ge; {{ a.confusion.score_threshold }}).{% else %}No two classes
are confused at score &ge; {{ a.confusion.score_threshold }}.{% endif %}</p>
<p class="note">AP in points (0-100), COCO's definitions; the matching is COCOEvaluator's, so these equal pycocotools'.</p>
</section>

<section id="errors">
<h2>Error breakdown</h2>
<img class="plot" alt="error breakdown bar chart" src="{{ images.errors }}">
<div class="wide"><table>
<tr><th>error type</th><th>ΔAP at IoU {{ a.fg_iou }}</th><th>ΔAP .50:.95</th><th>count at IoU {{ a.fg_iou }}</th></tr>
{% for key, label in types %}<tr><td>{{ label }}</td><td>{{ deltas[a.fg_key][key]|pct(2) }}</td>
<td>{{ deltas["AP"][key]|pct(2) }}</td><td>{{ type_counts[key] }}</td></tr>
{% endfor %}</table></div>
<p class="note">ΔAP: the AP gained if every error of the type were fixed (TIDE, Bolya et al. 2020).
"all false positives" / "all false negatives": AP with every false positive removed / every missed object
found. {{ a.counts.FP.total }} false positives and {{ a.counts.FN.total }} false negatives at IoU {{ a.fg_iou }}.</p>
</section>

<section id="confusion">
<h2>Confusion matrix</h2>
<div class="wide"><img class="plot" alt="confusion matrix heatmap" src="{{ images.confusion }}"></div>
{% if confused %}<p>Most confused (true &rarr; predicted):</p><ul>
{% for truth, predicted, count in confused %}<li>{{ truth }} &rarr; {{ predicted }}: {{ count }}</li>
{% endfor %}</ul>{% endif %}
<p class="note">Rows: true class, last row background (false positives); columns: predicted class, last column
missed. Colour: share of the row; numbers: counts.</p>
</section>

<section id="pr-curves">
<h2>Precision-recall curves</h2>
<img class="plot" alt="per-class precision-recall curves" src="{{ images.pr }}">
<p class="note">At IoU 0.5, 100 detections per image; the dot is the recommended threshold (best F1).</p>
</section>

<section id="classes">
<h2>Per class</h2>
<div class="wide"><table>
<tr><th>class</th><th>GT</th><th>detections</th><th>AP</th><th>AP50</th><th>AP75</th><th>APs</th><th>APm</th>
<th>APl</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th>
{% for key, label in types[:6] %}<th>{{ key }}</th>{% endfor %}</tr>
{% for c in a.per_class %}<tr><td>{{ c.name }}</td><td>{{ c.num_gt }}</td><td>{{ c.num_detections }}</td>
<td>{{ c.ap|pct }}</td><td>{{ c.ap50|pct }}</td><td>{{ c.ap75|pct }}</td><td>{{ c.ap_by_size.small|pct }}</td>
<td>{{ c.ap_by_size.medium|pct }}</td><td>{{ c.ap_by_size.large|pct }}</td><td>{{ c.threshold|num }}</td>
<td>{{ c.precision|num }}</td><td>{{ c.recall|num }}</td><td>{{ c.f1|num }}</td>
{% for key, label in types[:6] %}<td>{{ c.errors[key] }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
<p class="note">threshold: the score threshold that maximises F1 at IoU {{ a.fg_iou }} (keep detections scoring at
least this), with the precision, recall and F1 there; "-" where the class has no correct detection. Error columns:
false positives by type and missed objects at IoU {{ a.fg_iou }}.</p>
</section>

<section id="worst">
<h2>Worst images</h2>
<p class="key"><span><i class="sw" style="border-top:3px dashed rgb(40,170,60)"></i>GT found</span>
<span><i class="sw" style="border-top:3px dashed rgb(255,140,0)"></i>GT not found [why]</span>
<span><i class="sw" style="border-top:3px solid rgb(30,110,230)"></i>correct detection</span>
<span><i class="sw" style="border-top:3px solid rgb(220,30,30)"></i>false positive [type]</span></p>
{% if not a.worst %}<p>No image has an error at the recommended thresholds.</p>{% endif %}
<div class="grid">
{% for w, src in worst %}<figure><img alt="image {{ w.image_id }}" src="{{ src }}">
<figcaption>#{{ loop.index }}: image {{ w.image_id }} {{ w.file_name }} &middot; {{ w.false_positives }} false positives,
{{ w.false_negatives }} false negatives{% if not w.image_found %} &middot; image file not found, drawn on grey{% endif %}
</figcaption></figure>
{% endfor %}</div>
<p class="note">Ranked by false positives plus false negatives at each class's recommended threshold, IoU
{{ a.fg_iou }}. Types: cls, loc, both (cls and loc), dupe, bkg; a GT is "miss" when nothing detected it, "cls"/"loc"
when a detection found it with the wrong class or a loose box, "low score" when it was found below the threshold.</p>
</section>
</main>
</body>
</html>
"""


def write_report(analysis: Analysis, path: Union[str, os.PathLike]) -> str:
    """Writes `path`/analysis.json and `path`/report.html (the folder is
    created); returns the report's path. Both are written atomically."""
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, "analysis.json"), analysis.to_dict())
    report = os.path.join(folder, "report.html")
    with atomic_write(report) as f:
        f.write(render_html(analysis))
    return report


def render_html(analysis: Analysis) -> str:
    """The report page as a string."""
    import jinja2  # torch depends on it, so it is installed wherever detkit is

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(pct=_pct, num=_num)
    confused = analysis.confusion.most_confused(5)
    biggest_key, biggest_fg_key = analysis.biggest_error(), analysis.biggest_error(analysis.fg_key)
    images = {"errors": plots.data_uri(plots.error_bars(analysis)),
              "confusion": plots.data_uri(plots.confusion_heatmap(analysis)),
              "pr": plots.data_uri(plots.pr_curves(analysis))}
    worst = [(w, plots.data_uri(plots.image_png(w.drawing))) for w in analysis.worst if w.drawing is not None]
    type_counts = {**{k: v for k, v in analysis.counts["FP"].items() if k != "total"},
                   "miss": analysis.counts["FN"]["miss"], "FP": analysis.counts["FP"]["total"],
                   "FN": analysis.counts["FN"]["total"]}
    deltas = {key: {**analysis.errors[key], **analysis.special[key]} for key in analysis.errors}
    return env.from_string(TEMPLATE).render(
        a=analysis, csp=CSP, images=images, worst=worst, confused=confused, biggest_key=biggest_key,
        biggest=plots.TYPE_LABELS[biggest_key], biggest_fg_key=biggest_fg_key,
        biggest_fg=plots.TYPE_LABELS[biggest_fg_key], types=list(plots.TYPE_LABELS.items()), deltas=deltas,
        type_counts=type_counts)


def _pct(value, digits: int = 1) -> str:
    """A fraction as AP points; "-" where undefined (None or -1)."""
    if value is None or value < 0:
        return "-"
    return f"{100 * value:.{digits}f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"
