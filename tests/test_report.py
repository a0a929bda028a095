"""make report (experiments/report): one offline HTML page (ledger, tables, figures, provenance)
that renders in headless Chromium with every figure decoded."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from data.paths import resolve
from experiments.report import build
from experiments.report.markdown import to_html
from experiments.tables.figures import informative_ylim

PUBLISHED = resolve("results/published")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)
CLAIMS = "id,paper,claim,verdict,row,effect,ci_low,ci_high,some_new_column\n" \
         "1,NB,L1 NB beats plain,reproduced,fcn,1.39,0.01,2.78,x\n" \
         "2,NB,Another claim,not reproduced,fcn,-0.5,-1.0,0.0,y\n"
ROWS = "claim_id,row,status,effect\n1,fcn,holds,1.39\n"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """A records folder with one experiment (demo_digits), its table, figure and a ledger whose
    columns are not all the ones the report knows."""
    root = tmp_path_factory.mktemp("records")
    shutil.copytree(PUBLISHED / "runs" / "demo_digits", root / "runs" / "demo_digits",
                    ignore=shutil.ignore_patterns("checkpoint*", "*.lock", ".lock"))
    for name in ("demo_digits.md", "demo_digits.csv"):
        (root / "tables").mkdir(exist_ok=True)
        shutil.copy(PUBLISHED / "tables" / name, root / "tables" / name)
    (root / "figures").mkdir()
    shutil.copy(PUBLISHED / "figures" / "nb_toy.png", root / "figures" / "nb_toy.png")
    (root / "claims.csv").write_text(CLAIMS)
    (root / "claims_rows.csv").write_text(ROWS)
    return root


@pytest.fixture(scope="module")
def page(records, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    build(str(records), str(out))
    return out


def test_page_is_self_contained(page):
    html = page.read_text()
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    sources = re.findall(r'<img[^>]*src="([^"]+)"', html)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_ledger_first_then_tables_figures_provenance(page):
    html = page.read_text()
    order = [html.index(f'id="{s}"') for s in ("ledger", "tables", "figures", "provenance")]
    assert order == sorted(order)
    ledger = html[order[0]:order[1]]
    assert "<b>1</b>reproduced" in ledger and "<b>1</b>not reproduced" in ledger
    assert "[+0.01, +2.78]" in ledger and "some_new_column" not in ledger     # known columns only
    assert "1 rows" in ledger                                               # claim 1's row folded in
    tables = html[order[1]:order[2]]
    assert "Demo: digits FCN 64-128-10" in tables and "<td>95.45 ± 0.58 [3/3]<br>" in tables
    figures = html[order[2]:order[3]]
    assert 'id="figure-demo_digits"' in figures and "redrawn from the records" in figures
    assert 'id="figure-nb_toy"' in figures and "committed figure" in figures
    provenance = html[order[3]:]
    assert "<td>demo_digits</td><td>quick</td><td>12/12</td><td>30</td><td>3</td>" in provenance


def test_a_missing_ledger_is_said_not_hidden(records, tmp_path):
    root = tmp_path / "records"
    shutil.copytree(records, root)
    (root / "claims.csv").unlink()
    out = build(str(root), str(tmp_path / "r.html"), redraw=False)
    assert "No ledger beside these records" in out.read_text()


def test_markdown_keeps_cell_tags_and_escapes_the_rest():
    html = str(to_html("# T\n\n| a | b |\n|---|---|\n| 1<br>x <script> | **2** |\n\n_note x86_64._"))
    assert "<h3>T</h3>" in html and "<td>1<br>x &lt;script&gt;</td>" in html
    assert "<strong>2</strong>" in html and '<p class="note"><em>note x86_64.</em></p>' in html


def test_zoom_leaves_out_the_climb_from_chance():
    climb = np.concatenate([np.linspace(20, 90, 20), np.linspace(90, 98, 480)])
    low, high = informative_ylim([climb, climb - 1.5])
    assert 87 < low < 89.5 and 98 < high < 99
    assert informative_ylim([np.linspace(0, 1, 100)]) is None         # no early climb: no zoom


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; "
                    ".ci/run installs it): the page is not rendered in a browser here")
def test_page_renders_in_headless_chromium(page, tmp_path):
    """A test-only copy of the page reports, after load, how many images decoded with a
    non-zero natural width; a screenshot of the page is not blank."""
    probe = tmp_path / "probe.html"
    script = ("<script>addEventListener('load', () => { const imgs = [...document.images];"
              "document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);"
              "document.body.setAttribute('data-images', imgs.length); });</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-images="2"' in dom.stdout and 'data-decoded="2"' in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1280,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 1000 and pixels.std() > 0.05                # text and tables drawn
