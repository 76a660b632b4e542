"""Hotspots: per-block and per-kind tables, the costliest layers, the chart and the HTML page
(the page checked in a real headless Chromium: tables there, images decoded)."""
import base64
import re
import shutil
import struct
from pathlib import Path

import pandas as pd
import pytest

from neuralpower import nets
from neuralpower.errors import NeuralPowerError
from neuralpower.hotspots import (PNG_SIGNATURE, chart_png, hotspot_text, hotspots, html_page,
                                  html_report, plot_hotspots)
from neuralpower.predict import Prediction, predict, totals
from neuralpower.predictor import Predictor

ROOT = Path(__file__).resolve().parents[1]
NET, SHAPE = "torchvision:resnet18", (1, 3, 64, 64)


@pytest.fixture(scope="module")
def with_power():
    """ResNet-18 on the Raptor Lake predictor (runtime and RAPL power)."""
    return predict(nets.build(NET), SHAPE, Predictor.load(ROOT / "models/raptorlake_cpu.predictor"),
                   network=NET)


@pytest.fixture(scope="module")
def runtime_only():
    """ResNet-18 on the EPYC predictor (runtime only, no power sensor in its campaign)."""
    return predict(nets.build(NET), SHAPE,
                   Predictor.load(ROOT / "models/amd_epyc_2t_cpu.predictor"), network=NET)


def close(a, b):
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


@pytest.mark.parametrize("depth", [1, 2])
def test_blocks_and_kinds_add_up_to_the_modeled_layers(with_power, depth):
    p = with_power
    assert p.has_power and p.totals["energy_mj"] is not None
    h = hotspots(p, top=5, depth=depth)
    runtime, energy = p.modeled.runtime_ms.sum(), p.modeled.energy_mj.sum()
    for key in ("by_block", "by_kind"):
        g = h[key]
        assert close(g.runtime_ms.sum(), runtime) and close(g.energy_mj.sum(), energy)
        assert close(g.runtime_ms.sum(), p.totals["runtime_ms"])
        assert close(g.energy_mj.sum(), p.totals["energy_mj"])
        assert g.layers.sum() == p.totals["layers_modeled"] and g.macs.sum() == p.modeled.macs.sum()
        assert close(g.runtime_share_pct.sum(), 100) and close(g.energy_share_pct.sum(), 100)
        assert (g.power_w - g.energy_mj / g.runtime_ms).abs().max() < 1e-9
    blocks = set(h["by_block"].block)
    if depth == 1:
        assert {"layer1", "layer2", "layer3", "layer4"} <= blocks and "conv1" in blocks
    else:
        assert {"layer1.0", "layer1.1", "layer4.1"} <= blocks
    assert "conv2d" in set(h["by_kind"].kind)


def test_block_of_one_layer_by_hand(with_power):
    """A block's row is the sum of its own layers and no other's."""
    p = with_power
    g = hotspots(p, depth=1)["by_block"].set_index("block")
    mine = p.modeled[p.modeled.module.str.startswith("layer3.")]
    assert len(mine) and g.loc["layer3", "layers"] == len(mine)
    assert close(g.loc["layer3", "runtime_ms"], mine.runtime_ms.sum())
    assert close(g.loc["layer3", "energy_mj"], mine.energy_mj.sum())


@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_lists_are_the_k_costliest_sorted(with_power, k):
    p = with_power
    h = hotspots(p, top=k)
    for key, col in (("top_energy", "energy_mj"), ("top_runtime", "runtime_ms")):
        top = h[key]
        assert len(top) == k
        assert list(top[col]) == sorted(top[col], reverse=True)
        assert list(top[col]) == sorted(p.modeled[col], reverse=True)[:k]
        assert {"name", "kind", "module", "input_shape", "runtime_share_pct"} <= set(top.columns)
        assert close(top[col].iloc[0] / p.modeled[col].sum() * 100,
                     top[col.split("_")[0] + "_share_pct"].iloc[0])


def test_text_with_power_names_units(with_power):
    text = hotspot_text(with_power, top=3)
    for heading in ("By block (module path, depth 1):", "By kind:", "Top 3 layers by energy:",
                    "Top 3 layers by runtime:"):
        assert heading in text
    for unit in ("runtime_ms", "energy_mj", "power_w", "MMACs", "runtime_%", "energy_%"):
        assert unit in text
    assert "layer4" in text and "nan" not in text.lower()
    assert "no power model" not in text.lower() and "left out" not in text
    assert f"{with_power.totals['energy_mj']:.3f} mJ" in text


def test_no_power_hides_energy_and_says_so_once(runtime_only):
    p = runtime_only
    assert not p.has_power and p.totals["energy_mj"] is None
    h = hotspots(p, top=4)
    assert h["top_energy"].empty and len(h["top_runtime"]) == 4
    assert h["by_block"].energy_mj.isna().all()  # unknown, never zero
    assert close(h["by_block"].runtime_ms.sum(), p.totals["runtime_ms"])
    text = hotspot_text(p, top=4)
    assert text.lower().count("no power model") == 1
    assert "energy_mj" not in text and "power_w" not in text and "energy_%" not in text
    assert "by energy" not in text and "Top 4 layers by runtime:" in text
    assert "nan" not in text.lower() and "runtime_ms" in text


def test_partial_power_hides_energy(with_power):
    """Power for some modeled layers only: a total and shares over part of the energy would
    mislead, so energy is left out as it is without power, with its own reason."""
    layers = with_power.layers.copy()
    layers.loc[layers.kind == "linear", ["power_w", "energy_mj"]] = float("nan")
    p = Prediction(with_power.network, with_power.device, with_power.input_shape, layers,
                   totals(layers))
    assert p.has_power and p.totals["energy_mj"] is None
    h = hotspots(p, top=3)
    assert h["top_energy"].empty and h["by_kind"].energy_share_pct.isna().all()
    text = hotspot_text(p, top=3)
    assert "only some of the modeled layers" in text and "energy_mj" not in text


def test_no_modeled_layer_still_renders(with_power, tmp_path):
    layers = with_power.layers.assign(modeled=False, runtime_ms=float("nan"),
                                      power_w=float("nan"), energy_mj=float("nan"))
    p = Prediction("empty", "nowhere", [[1]], layers, totals(layers))
    h = hotspots(p)
    assert all(df.empty for df in h.values())
    assert hotspot_text(p).count("(none)") == 3  # blocks, kinds, top runtime (no energy)
    assert png_size(chart_png(p))[0] > 0
    html_report(p, tmp_path / "r.html")
    assert "Unmodeled ops" in (tmp_path / "r.html").read_text()


def test_bad_top_or_depth_is_one_line(with_power):
    for kw in ({"top": 0}, {"depth": 0}, {"top": -2}):
        with pytest.raises(NeuralPowerError) as e:
            hotspots(with_power, **kw)
        assert "\n" not in str(e.value)


def png_size(data: bytes):
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_is_a_png(with_power, runtime_only, tmp_path):
    for p in (with_power, runtime_only):
        path = tmp_path / "deep" / f"{p.device}.png"
        plot_hotspots(p, path, top=10, depth=2)
        data = path.read_bytes()
        w, h = png_size(data)
        assert path.stat().st_size > 5000 and w > 500 and h > 500
    assert [f.name for f in tmp_path.joinpath("deep").iterdir() if f.name.startswith(".")] == []


def test_html_page_escapes_and_writes_atomically(with_power, tmp_path):
    png = chart_png(with_power, top=3)
    path = tmp_path / "page.html"
    html_page("a <title>", [("Table & text", [pd.DataFrame({"x<y": ["<script>alert(1)</script>"],
                                                            "ms": [1.5]}), "1 < 2 & <b>"]),
                            ("Image", png)], path)
    page = path.read_text()
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt;" in page
    assert "x&lt;y" in page and "<title>a &lt;title&gt;</title>" in page
    assert page.count('<img src="data:image/png;base64,') == 1
    assert 'src="http' not in page and "<link" not in page
    # a failure while rendering leaves the previous page whole and no temporary file behind
    for bad in ([("Broken", object())], [("Missing", Path(tmp_path / "nope.png"))],
                [("Not a PNG", b"GIF89a")]):
        with pytest.raises((TypeError, NeuralPowerError)):
            html_page("t", [("Fine", "text")] + bad, path)
        assert path.read_text() == page
    assert sorted(f.name for f in tmp_path.iterdir()) == ["page.html"]


# --- in a real browser -----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed "
                    "(apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM  # with the driver's path given, selenium downloads nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


PAGE_STATE = """
const table = t => ({head: Array.from(t.querySelectorAll('thead th'), e => e.textContent),
                     rows: t.querySelectorAll('tbody tr').length, text: t.innerText});
const image = i => ({complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
                     alt: i.alt});
const sections = {};
for (const h of document.querySelectorAll('h2')) {
  const s = sections[h.textContent] = {tables: [], images: []};
  for (let e = h.nextElementSibling; e && e.tagName !== 'H2'; e = e.nextElementSibling) {
    const all = sel => e.matches(sel) ? [e] : Array.from(e.querySelectorAll(sel));
    s.tables.push(...all('table').map(table));
    s.images.push(...all('img').map(image));
  }
}
return {
  title: document.title,
  h2: Array.from(document.querySelectorAll('h2'), e => e.textContent),
  sections: sections,
  tables: Array.from(document.querySelectorAll('table'), table),
  images: Array.from(document.images, image),
  scripts: document.scripts.length,
  text: document.body.innerText,
};
"""


def open_page(browser, path):
    browser.get(path.resolve().as_uri())
    return browser.execute_script(PAGE_STATE)


def test_html_report_renders_in_chromium(browser, with_power, tmp_path):
    path = tmp_path / "report.html"
    html_report(with_power, path, top=5, depth=1)
    page = open_page(browser, path)
    assert page["title"] == f"{NET} on {with_power.device}: hotspots"
    assert page["h2"][:5] == ["Totals", "By block (module path, depth 1)", "By kind",
                              "Top 5 layers by energy", "Top 5 layers by runtime"]
    assert "All {} layers".format(len(with_power.layers)) in page["h2"]
    sections = page["sections"]
    (block,) = sections["By block (module path, depth 1)"]["tables"]
    assert {"block", "runtime_ms", "energy_mj", "power_w", "energy_share_pct"} <= set(block["head"])
    assert all(f"layer{i}" in block["text"] for i in range(1, 5))
    assert block["rows"] == len(hotspots(with_power)["by_block"])
    for heading in ("By kind", "Top 5 layers by energy", "Top 5 layers by runtime"):
        (t,) = sections[heading]["tables"]
        assert t["rows"] == (len(hotspots(with_power)["by_kind"]) if heading == "By kind" else 5)
    (layers,) = sections[f"All {len(with_power.layers)} layers"]["tables"]
    assert layers["rows"] == len(with_power.layers)  # the full per-layer table
    assert {"name", "kind", "input_shape", "macs", "runtime_ms", "energy_mj"} <= set(layers["head"])
    (un,) = sections["Unmodeled ops"]["tables"]  # listed, never dropped
    assert un["rows"] == len(with_power.unmodeled) and "batch_norm" in un["text"]
    # the chart is embedded and decoded: a broken data: URI would give naturalWidth 0
    assert len(page["images"]) == 1 and sections["Chart: energy"]["images"] == page["images"]
    img = page["images"][0]
    assert img["complete"] and img["width"] > 500 and img["height"] > 300 and img["alt"]
    assert page["scripts"] == 0


def test_runtime_only_report_in_chromium(browser, runtime_only, tmp_path):
    path = tmp_path / "report.html"
    html_report(runtime_only, path, top=3, depth=2)
    page = open_page(browser, path)
    assert page["text"].lower().count("no power model") == 1
    assert "Top 3 layers by runtime" in page["h2"]
    assert not any("energy" in h for h in page["h2"][:5])
    for t in page["tables"]:
        assert not {"energy_mj", "power_w", "energy_share_pct"} & set(t["head"])
    assert "layer1.0" in page["text"] and "NaN" not in page["text"]
    assert [i["width"] > 0 for i in page["images"]] == [True]


def test_generic_page_in_chromium(browser, with_power, tmp_path):
    png = tmp_path / "chart.png"
    plot_hotspots(with_power, png, top=4)
    path = tmp_path / "page.html"
    evil = "<img src=x onerror=alert(1)>"
    html_page("Validation", [("Chart from a file", png),
                             ("Chart from bytes", chart_png(with_power, top=3)),
                             ("Table", pd.DataFrame({"network": [evil], "runtime_ms": [1.25]})),
                             ("Note", "line one\nline two")], path)
    page = open_page(browser, path)
    assert page["h2"] == ["Chart from a file", "Chart from bytes", "Table", "Note"]
    assert [(i["complete"], i["width"] > 0) for i in page["images"]] == [(True, True)] * 2
    assert png_size(png.read_bytes())[0] == page["images"][0]["width"]
    # embedded byte for byte (a browser shows a truncated PNG too)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', path.read_text())
    assert base64.b64decode(embedded[0]) == png.read_bytes()
    assert page["images"][0]["alt"] == "Chart from a file (chart.png)"
    assert evil in page["tables"][0]["text"]  # shown as text, not run as markup
    assert page["tables"][0]["head"] == ["network", "runtime_ms"]
    assert "line one\nline two" in page["text"]
