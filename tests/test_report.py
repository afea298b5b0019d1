"""The HTML report (issue 20): under 3 MB however many runs, sortable tables, every entry linked
to its runs' files, the dataset with the most runs open first, and charts whose labels never
collide, 19 entries included."""

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMITTED_BASELINE
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox
from test_compare import fake_run
from typer.testing import CliRunner

from zoo import compare as comparing
from zoo import plots, report
from zoo.cli import app

runner = CliRunner()
COMMITTED_CMP_FACADE = Path("results/cmp-facade/unet-small/20261121-150844")


def write_report(folder: Path) -> str:
    out = folder / "report.html"
    result = runner.invoke(app, ["compare", str(folder), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text()


def tables(html: str) -> list[str]:
    return re.findall(r"<table.*?</table>", html, re.S)


@pytest.fixture
def seeded(tmp_path):
    """Three entries on Fashion-MNIST, six runs: baseline-cnn (3 seeds, and a 30-epoch run) and
    wide-leaky-cnn (2 seeds)."""
    for seed, accuracy in enumerate((0.920, 0.922, 0.921)):
        fake_run(tmp_path, "baseline-cnn", seed, accuracy)
    for seed, accuracy in enumerate((0.930, 0.931)):
        fake_run(tmp_path, "wide-leaky-cnn", seed, accuracy)
    fake_run(tmp_path, "baseline-cnn", 0, 0.925, epochs=30)
    return tmp_path


@pytest.fixture
def many_runs(tmp_path):
    """19 entries (two models, each with several recipes) of two seeds each, every run with the
    committed baseline run's ten figures."""
    recipes = itertools.islice(
        itertools.product(range(1, 11), ("baseline-cnn", "wide-leaky-cnn")), 19
    )
    for number, (epochs, model) in enumerate(recipes):
        for seed in (0, 1):
            run_dir = fake_run(tmp_path, model, seed, 0.90 + number / 1000, epochs=epochs)
            shutil.copytree(COMMITTED_BASELINE / "figures", run_dir / "figures")
    return tmp_path


def test_a_report_of_many_runs_is_under_3_mb_its_thumbnails_linking_the_full_figures(many_runs):
    html = write_report(many_runs)
    assert len(html.encode()) < 3_000_000, f"{len(html.encode()):,} bytes"
    thumbnails = re.findall(r'<a href="([^"#]+)"><img alt="[^"]+" src="data:image/png', html)
    assert len(thumbnails) == 19 * 10, "the first seed of every entry shows its ten figures"
    for href in thumbnails:
        assert not href.startswith("/") and (many_runs / href).is_file(), href


def test_every_table_sorts_by_a_click_on_its_header(seeded):
    html = write_report(seeded)
    assert len(tables(html)) == 3, "the main table and one per per-class metric"
    for table in tables(html):
        assert table.startswith('<table class="sortable">'), table[:80]
        assert re.search(r"<thead><tr>(<th>[^<]*</th>)+</tr></thead>", table), table[:200]
    script = html[html.index("<script>") : html.index("</script>")]
    assert 'querySelectorAll("table.sortable th")' in script and "body.append(...rows)" in script


def test_the_sort_script_orders_numbers_as_numbers_in_a_real_browser(seeded, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    html = write_report(seeded)
    click = """<script>const th = [...document.querySelectorAll("th")].find((t) =>
        t.textContent === "test accuracy"); th.click();</script></body>"""
    page = tmp_path / "clicked.html"
    page.write_text(html.replace("</body>", click))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    first = tables(dom)[0]
    header = re.findall(r"<th[^>]*>([^<]*)</th>", first)
    rows = [
        re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in first.split("<tbody>")[1].split("<tr>")[1:]
    ]
    scores = [float(cells[header.index("test accuracy")].split()[0]) for cells in rows]
    assert scores == sorted(scores) and len(scores) == 3, "the best-first rows, now ascending"
    assert 'data-order="ascending"' in first


def test_every_row_links_to_its_runs_files_relative_to_the_report(seeded, tmp_path):
    html = write_report(seeded)
    rows = re.findall(r"<tr>.*?</tr>", tables(html)[0].split("<tbody>")[1], re.S)
    comparison = comparing.compare(seeded)
    assert len(rows) == len(comparison.rows["fashion-mnist"]) == 3
    for row, entry in zip(rows, comparison.rows["fashion-mnist"], strict=True):
        (anchor,) = re.findall(r'<a href="#([^"]+)">', row)
        details = re.search(rf'<details id="{anchor}">.*?</details>', html, re.S).group()
        for run in entry.runs:
            metrics = (run.run_dir / "metrics.json").relative_to(seeded).as_posix()
            assert f'href="{metrics}"' in details, f"{anchor} lacks {metrics}"
    elsewhere = report.render(comparison, report_dir=tmp_path / "site")
    run = comparison.rows["fashion-mnist"][0].runs[0]
    assert f'href="../{run.run_dir.relative_to(tmp_path).as_posix()}/metrics.json"' in elsewhere


def test_the_report_opens_on_the_dataset_with_the_most_runs(seeded, tmp_path):
    shutil.copytree(COMMITTED_CMP_FACADE, seeded / "cmp-facade" / "unet-small" / "run")
    html = write_report(seeded)  # cmp-facade (1 run) comes first; fashion-mnist has 6 runs
    assert re.findall(r'<section class="tab active" id="([^"]+)"', html) == ["fashion-mnist"]
    assert re.findall(r'<a href="#([^"]+)" class="active">', html) == ["fashion-mnist"]
    assert '<section class="tab" id="cmp-facade"' in html


def pixel_boxes(fig, texts):
    """The texts' boxes in pixels, an annotation's leader line left out."""
    renderer = fig.canvas.get_renderer()
    boxes = []
    for text in texts:
        if isinstance(text, Annotation):
            text.update_positions(renderer)
        boxes.append(Text.get_window_extent(text, renderer))
    return boxes


def assert_apart(boxes, what):
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not a.overlaps(b), f"{what} {i} and {j} overlap"


def test_the_scatters_19_labels_collide_with_nothing_and_stay_inside():
    rng = np.random.default_rng(0)
    speeds = [*rng.uniform(900, 1100, 10), *rng.uniform(5_000, 40_000, 9)]  # a tight cluster
    scores = [*rng.uniform(0.920, 0.922, 10), *rng.uniform(0.90, 0.94, 9)]
    speeds[1], scores[1] = speeds[0], scores[0] + 0.0002  # and two points almost on each other
    names = [
        f"timm/model_{i} (--epochs {i} --amp --amp-dtype bfloat16 --augment)" for i in range(19)
    ]
    front = report.pareto_front(list(zip(speeds, scores, strict=True)))
    fig = plots.plot_score_vs_speed(
        list(range(1, 20)), names, speeds, scores, front, xlabel="images/s", ylabel="accuracy"
    )
    (ax,) = fig.axes
    renderer = fig.canvas.get_renderer()
    labels = pixel_boxes(fig, ax.texts)
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(n) for n in range(1, 20))
    assert_apart(labels, "labels")
    frame = ax.get_window_extent(renderer)
    markers = ax.transData.transform(np.column_stack([speeds, scores]))
    for box in labels:
        assert frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1), "left the axes"
        assert not any(box.contains(x, y) for x, y in markers), "a label covers a point"
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(frame), "the key overlaps the axes"
    assert_apart(pixel_boxes(fig, ax.get_xticklabels()), "x tick labels")
    plots.plt.close(fig)


def test_a_row_of_several_seeds_has_its_std_as_an_error_bar_that_no_label_covers(seeded):
    rows = comparing.compare(seeded).rows["fashion-mnist"]
    assert [row.n for row in rows] == [2, 1, 3]  # wide-leaky-cnn, baseline-cnn 30 epochs, 15
    fig = report.plot_scatter(rows)
    (ax,) = fig.axes
    (bars,) = ax.containers
    (lines,) = bars.lines[2]
    spans = sorted((round(a[1], 6), round(b[1], 6)) for a, b in lines.get_segments())
    assert spans == [(0.921 - 0.001, 0.921 + 0.001), (0.9305 - 0.000707, 0.9305 + 0.000707)]
    assert "± std over the seeds (n > 1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    ends = [ax.transData.transform(segment) for segment in lines.get_segments()]
    for box in pixel_boxes(fig, ax.texts):
        for (x, y0), (_, y1) in ends:
            assert not box.overlaps(Bbox.from_extents(x - 1, y0, x + 1, y1)), "a label on a bar"
    plots.plt.close(fig)


def test_a_label_crowded_off_its_points_right_goes_round_its_error_bar_not_on_it():
    """A neighbour up and to the right takes the first spots of point 1's label; the next spot,
    straight above the point, is on its error bar, so the label goes further."""
    fig, ax = plots.plt.subplots(figsize=(4, 4))
    ax.set(xlim=(0, 100), ylim=(0, 100))
    points = 72 / fig.dpi  # points per pixel
    x, y = ax.transData.transform((50, 50))
    neighbour = ax.transData.inverted().transform((x + 9 / points, y + 5 / points))
    xs, ys = [50, neighbour[0]], [50, neighbour[1]]
    one, _ = plots.place_labels(ax, xs, ys, ["1", "2"], spreads=[40, None])
    (box,) = pixel_boxes(fig, [one])
    (_, bottom), (_, top) = ax.transData.transform([(50, 10), (50, 90)])
    assert not box.overlaps(Bbox.from_extents(x - 1, bottom, x + 1, top)), "a label on a bar"
    plots.plt.close(fig)


def test_the_heatmaps_labels_do_not_collide_for_19_entries_and_12_classes():
    names = [f"timm/model_{i} (--epochs {i} --lr 0.00297306 --weight-decay 0.0134878 --augment)"
             for i in range(19)]  # fmt: skip
    classes = ["background", "facade", "window", "door", "cornice", "sill", "balcony", "blind",
               "deco", "molding", "pillar", "shop"]  # fmt: skip
    fig = plots.plot_class_heatmap(names, classes, np.full((19, 12), 0.9), "AP")
    ax = fig.axes[0]
    assert_apart(pixel_boxes(fig, ax.get_xticklabels()), "class labels")
    assert_apart(pixel_boxes(fig, ax.get_yticklabels()), "entry labels")
    assert all("…" not in t.get_text() for t in ax.get_yticklabels()), "names are never cut"
    plots.plt.close(fig)
