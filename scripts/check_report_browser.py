#!/usr/bin/env python
"""Check a rendered ``index.html`` of ``sntheory report`` in a real headless browser.

    python scripts/check_report_browser.py reports/index.html [--screenshot shot.png]

What is checked:

1. Statically: the page loads nothing from outside (every ``src``/``href`` is a ``data:`` URI or
   an in-page ``#anchor``; no ``<link>``, ``<script src>``, ``@import`` or ``url(http...)``).
2. In the browser (Chromium, headless, with the given flags), on a copy of the page with a small
   script appended that, once the page has loaded, writes each ``<img>``'s ``naturalWidth`` into
   the DOM: the DOM is dumped (``--dump-dom``) and every image must have decoded (natural width
   > 0); the overall verdict line, the verdict table (with its bound column filled) and one
   section per experiment must be there; where the report folder holds ``<name>/result.json``
   files, each experiment's section must show exactly its number of rows and figures.
3. A screenshot (``--screenshot``) must be a PNG that is not blank.

Exit status: 0 all checks pass, 1 a check failed (each failure is printed), 3 no browser found.
Browser: ``--browser PATH``, else ``$SNTHEORY_BROWSER``, else the first of chromium,
chromium-browser, google-chrome, google-chrome-stable on ``PATH`` (Debian: ``apt-get install -y
chromium``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
VERDICT_HEADERS = ("claim", "statement", "hypotheses", "setting", "bound", "measured [95% CI]",
                   "slack", "verdict")
VERDICTS = ("HOLDS", "VIOLATED", "INCONCLUSIVE", "OUTSIDE-HYPOTHESES")

# Appended to a copy of the page: after the load event, record what the browser decoded.
_PROBE = """
<script>
window.addEventListener('load', function () {
  var images = document.images, decoded = 0;
  for (var i = 0; i < images.length; i++) {
    var w = images[i].complete ? images[i].naturalWidth : 0;
    images[i].setAttribute('data-natural-width', String(w));
    images[i].setAttribute('data-natural-height', String(images[i].naturalHeight));
    if (w > 0) { decoded++; }
  }
  var probe = document.createElement('div');
  probe.id = 'browser-probe';
  probe.setAttribute('data-images', String(images.length));
  probe.setAttribute('data-decoded', String(decoded));
  document.body.appendChild(probe);
});
</script>
"""


def find_browser(explicit: str | None = None) -> str | None:
    """Path of a Chromium-family browser, or None."""
    for candidate in (explicit, os.environ.get("SNTHEORY_BROWSER")):
        if candidate:
            return shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Dom(HTMLParser):
    """Collects what the checks need from the dumped DOM."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict] = []
        self.probe: dict | None = None
        self.overall: dict | None = None
        self.sections: dict[str, dict] = {}
        self.tables: list[dict] = []         # {"id", "class", "experiment", "headers", "rows"}
        self._table: dict | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._cell_class = ""
        self._section: str | None = None
        self._in_overall = False
        self.overall_text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append({**a, "section": self._section})
            if self._section in self.sections:
                self.sections[self._section]["images"] += 1
        elif tag == "div" and a.get("id") == "browser-probe":
            self.probe = a
        elif tag == "p" and a.get("id") == "overall-verdict":
            self.overall, self._in_overall = a, True
        elif tag == "section" and a.get("id", "").startswith("exp-"):
            self._section = a["id"][4:]
            self.sections[self._section] = {**a, "images": 0}
        elif tag == "table":
            self._table = {"id": a.get("id"), "class": a.get("class"),
                           "experiment": a.get("data-experiment"), "headers": [], "rows": []}
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._cell_class = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(("".join(self._cell).strip(), tag, self._cell_class))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if all(kind == "th" for _, kind, _ in self._row):
                self._table["headers"] = [text for text, _, _ in self._row]
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None
        elif tag == "section":
            self._section = None
        elif tag == "p":
            self._in_overall = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_overall:
            self.overall_text += data


def static_problems(text: str) -> list[str]:
    """External references in the page source (it must be self-contained)."""
    problems = []
    for attr, value in re.findall(r"""\b(src|href)\s*=\s*["']([^"']*)["']""", text, re.I):
        if not (value.startswith("data:") or value.startswith("#")):
            problems.append(f"external reference {attr}={value[:80]!r}")
    if re.search(r"<link\b", text, re.I):
        problems.append("a <link> element (style sheets must be inline)")
    if re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I):
        problems.append("a <script src=...> element")
    if re.search(r"@import|url\(\s*['\"]?(https?:|//)", text, re.I):
        problems.append("a CSS @import or remote url(...)")
    return problems


def _run_browser(browser: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="sntheory-browser-") as profile:
        cmd = [browser, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _png_blank(path: Path) -> str | None:
    """Why the screenshot is unusable, or None."""
    data = path.read_bytes() if path.is_file() else b""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return f"screenshot {path} is missing or not a PNG"
    try:
        from matplotlib.image import imread
    except ImportError:
        return None  # the signature check above is all we can do without an image decoder
    pixels = imread(str(path))
    if pixels.ndim < 2 or pixels.shape[0] < 100 or pixels.shape[1] < 100:
        return f"screenshot {path} is too small: {pixels.shape}"
    if float(pixels.std()) == 0.0:
        return f"screenshot {path} is blank (a single colour)"
    return None


def check_report(index: Path, *, browser: str, screenshot: Path | None = None,
                 timeout: float = 120.0) -> tuple[list[str], dict]:
    """Run every check; returns ``(failures, facts)``."""
    index = Path(index).resolve()
    text = index.read_text(encoding="utf-8")
    failures = static_problems(text)
    facts: dict = {"index": str(index), "browser": browser}
    if "</body>" not in text:
        return failures + ["the page has no </body>"], facts
    with tempfile.TemporaryDirectory(prefix="sntheory-check-") as tmp:
        probe_page = Path(tmp) / "probe.html"
        probe_page.write_text(text.replace("</body>", _PROBE + "</body>", 1), encoding="utf-8")
        result = _run_browser(browser, ["--virtual-time-budget=10000", "--dump-dom",
                                        probe_page.as_uri()], timeout)
    if result.returncode != 0 or "<html" not in result.stdout:
        return failures + [f"the browser failed (exit {result.returncode}): "
                           f"{result.stderr.strip()[-500:]}"], facts
    dom = _Dom()
    dom.feed(result.stdout)
    facts["dom_bytes"] = len(result.stdout)
    # images
    if dom.probe is None:
        failures.append("the probe script did not run (no #browser-probe in the DOM)")
    widths = [int(img.get("data-natural-width", "0") or 0) for img in dom.images]
    facts["images"] = len(widths)
    facts["image_widths"] = widths
    for img, width in zip(dom.images, widths):
        if width <= 0:
            failures.append(f"an image did not decode (naturalWidth 0) in section "
                            f"{img.get('section')!r}: alt={img.get('alt', '')[:60]!r}")
    # overall verdict and verdict table
    if dom.overall is None or dom.overall.get("data-verdict") not in VERDICTS:
        failures.append("no overall verdict line (#overall-verdict with a verdict)")
    else:
        facts["overall_verdict"] = dom.overall["data-verdict"]
    tables = {t["id"]: t for t in dom.tables if t["id"]}
    verdict_table = tables.get("verdict-table")
    if verdict_table is None:
        failures.append("no verdict table (#verdict-table)")
    else:
        if tuple(verdict_table["headers"]) != VERDICT_HEADERS:
            failures.append(f"verdict table headers are {verdict_table['headers']}, expected "
                            f"{list(VERDICT_HEADERS)}")
        if not verdict_table["rows"]:
            failures.append("the verdict table has no rows")
        numeric_bounds = 0
        for row in verdict_table["rows"]:
            bound = [t for t, _, cls in row if "bound" in cls.split()]
            verdict = row[-1][0] if row else ""
            if not bound:
                failures.append(f"a verdict-table row has no bound cell: {row[:2]}")
            elif re.fullmatch(r"-?[0-9.]+(e[-+]?[0-9]+)?|-?inf", bound[0]):
                numeric_bounds += 1
            if not any(verdict.startswith(v) for v in VERDICTS):
                failures.append(f"a verdict-table row has no verdict: {verdict!r}")
        facts["verdict_rows"] = len(verdict_table["rows"])
        facts["numeric_bounds"] = numeric_bounds
        if verdict_table["rows"] and numeric_bounds == 0:
            failures.append("no bound in the verdict table is a number")
    # sections against the result files next to the page
    facts["sections"] = sorted(dom.sections)
    if not dom.sections:
        failures.append("no experiment sections (section#exp-<name>)")
    row_tables = {t["experiment"]: t for t in dom.tables if t["class"] == "rows"}
    for result_path in sorted(index.parent.glob("*/result.json")):
        if result_path.parent.name.startswith("."):
            continue
        result = json.loads(result_path.read_text(encoding="utf-8"))
        name = result["name"]
        if name not in dom.sections:
            failures.append(f"experiment {name!r} has a result.json but no section in the page")
            continue
        shown = len(row_tables[name]["rows"]) if name in row_tables else 0
        if shown != len(result["rows"]):
            failures.append(f"experiment {name!r}: the page shows {shown} rows, result.json has "
                            f"{len(result['rows'])}")
        if dom.sections[name]["images"] != len(result["figures"]):
            failures.append(f"experiment {name!r}: the page shows "
                            f"{dom.sections[name]['images']} images, result.json lists "
                            f"{len(result['figures'])} figures")
    # screenshot
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        if screenshot.exists():
            screenshot.unlink()
        shot = _run_browser(browser, ["--virtual-time-budget=10000", "--window-size=1400,2400",
                                      f"--screenshot={screenshot}", index.as_uri()], timeout)
        problem = _png_blank(screenshot)
        if shot.returncode != 0 or problem:
            failures.append(problem or f"the screenshot failed (exit {shot.returncode})")
        facts["screenshot"] = str(screenshot)
    return failures, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index", help="the report's index.html")
    parser.add_argument("--screenshot", metavar="PNG", help="also take a screenshot here")
    parser.add_argument("--browser", help="path or name of a Chromium-family browser")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per browser call")
    args = parser.parse_args(argv)
    index = Path(args.index)
    if not index.is_file():
        print(f"check_report_browser: {str(index)!r} does not exist", file=sys.stderr)
        return 1
    browser = find_browser(args.browser)
    if browser is None:
        print("check_report_browser: no Chromium-family browser found (tried "
              f"{', '.join(BROWSER_NAMES)}; Debian: apt-get install -y chromium)", file=sys.stderr)
        return 3
    failures, facts = check_report(index, browser=browser,
                                   screenshot=Path(args.screenshot) if args.screenshot else None,
                                   timeout=args.timeout)
    print(json.dumps({k: v for k, v in facts.items() if k != "image_widths"}, indent=1))
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("browser check: " + ("OK" if not failures else f"{len(failures)} failure(s)"),
          file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
