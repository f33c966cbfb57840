"""Criterion 1 (reports): the HTML report renders in headless Chromium with its verdict, tables
and pictures, and needs nothing from the network; the Markdown report is a PR comment."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from validation_models import onnx_attention_pair, primitive_attention_pair, save_pair

from pasa_onnx.errors import PasaError
from pasa_onnx.validation import validate

CHROMIUM = shutil.which("chromium")


class _Dom(HTMLParser):
    """Text under each element with an id, and a count of each tag."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, str] = {}
        self.tags: dict[str, int] = {}
        self.rows: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        ident = dict(attrs).get("id")
        if ident:
            self.text.setdefault(ident, "")
        if tag == "tr":
            for open_id in self.stack:
                if open_id:
                    self.rows[open_id] = self.rows.get(open_id, 0) + 1
        if tag not in ("br", "meta", "line", "rect"):
            self.stack.append(ident)

    def handle_endtag(self, tag):
        if tag not in ("br", "meta", "line", "rect") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for open_id in self.stack:
            if open_id:
                self.text[open_id] += data


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reports")
    orig, rw = save_pair(primitive_attention_pair(n_layers=2), tmp, "m")
    validate(orig, rw, report=[tmp / "r.html", tmp / "r.md"])
    return tmp


def test_html_is_self_contained(reports):
    html = (reports / "r.html").read_text()
    for needle in ("http:", "https:", "<script", "<link", "src=", "url("):
        assert needle not in html


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium not found: install Debian's package (apt-get install -y chromium) to "
    "render the HTML report; .ci/run installs it",
)
def test_html_renders_in_headless_chromium(reports, tmp_path):
    page = reports / "r.html"
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(dom.stdout)
    assert parsed.text["verdict"].startswith("PASS: 2 output(s) and 2 attention(s)")
    assert parsed.rows["attentions"] == 3 and parsed.rows["outputs"] == 3  # header + rows
    assert "attn_1" in parsed.text["attentions"] and "logits" in parsed.text["outputs"]
    for ident in ("attention-attn_0", "attention-attn_1", "output-hidden", "output-logits"):
        assert "rewritten vs fp32 reference" in parsed.text[ident]
    assert parsed.tags["svg"] == 4 and parsed.tags["rect"] > 8
    subprocess.run(
        [
            CHROMIUM,
            *flags,
            f"--user-data-dir={tmp_path / 'p2'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_markdown_report(reports):
    md = (reports / "r.md").read_text()
    lines = md.splitlines()
    assert (
        lines[0] == "### ✅ pasa-onnx validation — PASS: 2 output(s) and 2 attention(s) "
        "within tolerance"
    )
    assert sum(line.startswith("| <code>attn\\_") for line in lines) == 2
    assert (
        sum(line.startswith(("| <code>hidden</code>", "| <code>logits</code>")) for line in lines)
        == 2
    )
    header = next(line for line in lines if line.startswith("| attention"))
    sep = lines[lines.index(header) + 1]

    def cells(line: str) -> int:
        return len(re.split(r"(?<!\\)\|", line))  # escaped \| is text, not a separator

    assert cells(header) == cells(sep) == 10  # a well-formed table: 8 columns
    assert (
        "<details><summary>Inputs</summary>" in md
        and "| <code>input\\_ids</code> | \\[2\\, 16\\] | int64 |" in md
    )


def test_unknown_report_extension_fails_before_running(tmp_path):
    orig, rw = save_pair(onnx_attention_pair(), tmp_path, "m")
    with pytest.raises(PasaError, match=r"--report .*r\.txt: unknown report format"):
        validate(orig, rw, report=tmp_path / "r.txt")
    with pytest.raises(PasaError, match="directory .* does not exist"):
        validate(orig, rw, report=tmp_path / "nodir" / "r.json")
