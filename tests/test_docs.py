"""The docs site: `mkdocs build --strict` (guides, API reference from the docstrings, results pages
generated from benchmarks/results/), opened in headless Chromium; and the README as a front door."""
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """The headings (h1, h2) and link targets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.headings, self.links, self._in = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2"):
            self._in, text = tag, ""
            self.headings.append([tag, text])
        if tag == "a" and dict(attrs).get("href"):
            self.links.append(dict(attrs)["href"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.headings[-1][1] += data


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def rendered(page: Path) -> str:
    """The page's DOM after Chromium has loaded it (scripts run), offline."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page, heading", [
    ("index.html", "genkit"),
    ("guides/sample/index.html", "Sample"),
    ("api/samplers/index.html", "Samplers and time grids"),
    ("results/index.html", "Results"),
])
def test_pages_render_in_chromium_with_their_headings(site, page, heading):
    dom = parse(rendered(site / page))
    h1 = [text.strip().rstrip("¶").strip() for tag, text in dom.headings if tag == "h1"]
    assert heading in h1, h1
    if page.startswith("guides/sample"):
        assert any("stored grid" in text for _, text in dom.headings)
    if page.startswith("api/"):  # the reference is the docstrings, rendered
        html = (site / page).read_text()
        assert all(f"id=\"genkit.samplers.plan.{name}\"" in html for name in ("GridBook", "FittedGrid", "plan"))


def test_no_internal_link_is_broken(site):
    broken = []
    for html in site.rglob("*.html"):
        if html.name == "404.html":  # served at any depth, so its links are absolute to the site root
            continue
        for href in parse(html.read_text()).links:
            url = urlparse(href)
            if url.scheme or url.netloc or not url.path:
                continue  # another site, or an anchor on this page
            target = (html.parent / unquote(url.path)).resolve()
            if not (target.is_file() or (target / "index.html").is_file()):
                broken.append(f"{html.relative_to(site)} -> {href}")
    assert not broken, broken[:20]


def test_results_pages_carry_every_results_file_with_its_commit(site):
    """Each results file has its page, naming the file's commit (or saying it records none)."""
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        html = (site / "results" / path.stem / "index.html").read_text()
        commit = json.loads(path.read_text()).get("commit") or "not recorded in the file"
        assert commit in html and path.name in html, path.name


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 15_000
    commands = re.findall(r"^```bash\n(.*?)^```", readme, re.S | re.M)[0]
    assert "pip install" in commands and "python -m pytest -q" in commands
    for link in re.findall(r"\]\(([^)#]+)", readme):  # every relative link names a file of the repository
        assert link.startswith("http") or (ROOT / link).exists(), link
