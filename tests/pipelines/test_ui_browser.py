"""The UI in a real headless Chromium against the same ``dagster dev``: the experiment's asset graph and the page
of an asset whose materialization carries a plot. Screenshots go to the test's folder, or to $TPT_UI_SCREENSHOTS
(``docs/screenshots`` refreshes the ones the README shows)."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.pipelines.dagster_dev import LOCATION, metadata_values

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; scripts/test.sh installs it where it can
# Headless, and quiet: without the last four, Chromium keeps calling home on a network that goes nowhere.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODE = "[class*='AssetNode_minimalAssetNodeBox']"  # an asset's box in the zoomed-out graph
PLOT = "tokens_per_source"  # the mixture's markdown metadata entry that holds a PNG

pytestmark = [
    pytest.mark.slow,
    pytest.mark.must_run("browser"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no {CHROMIUM}: install Debian's chromium (scripts/test.sh)"),
]


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _screenshot(page: Page, folder: Path, name: str) -> None:
    page.screenshot(path=folder / name, animations="disabled")  # transitions fast-forwarded to their end
    if os.environ.get("TPT_UI_SCREENSHOTS"):
        target = Path(os.environ["TPT_UI_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / name, target / name)


def _names_shown(labels: list[str], names: list[str]) -> bool:
    """Each name on exactly one label, and no other label; the graph cuts the middle out of long names
    (``token_sha…_vanilla``)."""

    def shows(label: str, name: str) -> bool:
        head, cut, tail = label.partition("…")
        return label == name or (
            bool(cut) and name.startswith(head) and name.endswith(tail) and len(label) <= len(name)
        )

    return len(labels) == len(names) and all(sum(shows(label, name) for label in labels) == 1 for name in names)


def _fully_materialized(dagster_dev, asset: list[str]) -> bool:
    """Materialized, and in every partition if it has partitions: what the graph paints green."""
    done = {e["partition"] for e in dagster_dev.materializations(asset)}
    return bool(done) and done >= set(dagster_dev.partition_keys(asset))


def test_asset_graph_shows_every_asset_and_which_are_materialized(page, dagster_dev, mixture_runs, names, tmp_path):
    group = dagster_dev.group_assets(names.group)
    expected = sorted(path[-1] for path in group)
    materialized = sorted(path[-1] for path in group if _fully_materialized(dagster_dev, path))
    assert names.corpus[-1] in materialized and names.vanilla_mixture[-1] in materialized
    page.goto(f"{dagster_dev.url}/locations/{LOCATION}/asset-groups/{names.group}")
    # One box per asset; the zoomed-out graph colours it by status once the live data has come in (light while
    # loading, green when materialized, grey when not). Class names and colours are those of Dagster 1.13's UI.
    boxes = page.locator(NODE)
    expect(boxes).to_have_count(len(expected))
    expect(page.locator(f"{NODE}[style*='--color-background-light']")).to_have_count(0)
    assert _names_shown(boxes.all_inner_texts(), expected)
    assert _names_shown(page.locator(f"{NODE}[style*='--color-background-green']").all_inner_texts(), materialized)
    _screenshot(page, tmp_path, "asset_graph.png")


def test_asset_page_shows_the_plot_its_materialization_recorded(page, dagster_dev, mixture_runs, names, tmp_path):
    latest = mixture_runs[-1]  # the page shows the newest materialization of any partition
    [event] = [m for m in latest["assetMaterializations"] if m["assetKey"]["path"] == names.vanilla_mixture]
    recorded = metadata_values(event["metadataEntries"])
    page.goto(f"{dagster_dev.url}/assets/{'/'.join(names.vanilla_mixture)}")
    expect(page.locator("tr", has_text="stage_version")).to_contain_text(recorded["stage_version"])
    page.locator("tr", has_text=PLOT).get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator("img[src^='data:image/png;base64,']")
    expect(image).to_be_visible()
    assert image.get_attribute("src") in recorded[PLOT]  # the very PNG the run recorded
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")  # and it decodes
    _screenshot(page, tmp_path, "asset_page.png")
