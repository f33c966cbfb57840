"""Issue 15 D5: no name in a model (node, tensor, input, file path) can change the structure of
the Markdown or HTML report: property-based over arbitrary strings. The Markdown is parsed as
CommonMark with GFM tables and raw HTML (as on GitHub) by markdown-it-py; the HTML by html.parser.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pasa_onnx.comparison import Histogram, Metrics
from pasa_onnx.inputs import InputInfo
from pasa_onnx.reports import html_report, markdown_report
from pasa_onnx.results import AttentionResult, OutputResult, ValidationResult

markdown_it = pytest.importorskip("markdown_it", reason="pip install '.[test]' (markdown-it-py)")


def _metrics() -> Metrics:
    return Metrics(1e-3, 1e-4, 1e-3, 0.999, 0, Histogram([-8.0, -7.5, -7.0], [3, 1], 2, 0))


def _result(
    node: str, output: str, input_name: str, path: str, *, passed: bool
) -> ValidationResult:
    m = _metrics()
    attention = AttentionResult(
        node=node,
        pattern=f"primitive/{node}",
        replaced=[node, output],
        output=output,
        vs_original=m,
        vs_fp32_reference=m,
        original_vs_fp32_reference=m,
        max_abs_score=70000.0,
        plain_fp16_overflows=True,
        plain_fp16_nonfinite=4,
        plain_fp16_max_abs_err=float("inf"),
        within_tolerance=passed,
        note=f"note on {node}",
    )
    out = OutputResult(output, [2, 3], "float16", m, m, m, passed, note=f"about {output}")
    return ValidationResult(
        original=path,
        rewritten=path + ".pasa",
        verdict="pass" if passed else "fail",
        atol=1e-3,
        rtol=1e-2,
        seed=0,
        inputs=[InputInfo(input_name, (2, 3), "int64", True, f"kind of {input_name}")],
        dims={input_name: 3},
        outputs=[out],
        attentions=[attention],
        fp32_reference="original lifted to fp32",
        extra_outputs_bytes=0,
        notes=[f"attention '{node}': a note naming '{output}'"],
    )


def _md_structure(md: str) -> tuple[list[str], list[str], list[str]]:
    """(token types other than text, the raw HTML pieces, the text inside each <code>)."""
    parser = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    kinds, html, codes = [], [], []
    current: list[str] | None = None
    for token in parser.parse(md):
        for t in [token, *(token.children or [])]:
            if t.type in ("text", "inline"):
                if t.type == "text" and current is not None:
                    current.append(t.content)
                continue
            kinds.append(t.type)
            if t.type in ("html_inline", "html_block"):
                html.append(t.content.strip())
                if t.content == "<code>":
                    current = []
                elif t.content == "</code>" and current is not None:
                    codes.append("".join(current))
                    current = None
    return kinds, html, codes


def _as_markdown_reads_it(name: str) -> str:
    """What a name becomes in a one-line cell: line breaks are spaces, NUL is U+FFFD."""
    blanks = "\r\n\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"
    return "".join(" " if c in blanks else "\ufffd" if c == "\0" else c for c in name)


class _HtmlShape(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[str, ...]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, tuple(k for k, _ in attrs)))

    def handle_endtag(self, tag):
        self.tags.append(("/" + tag, ()))

    def handle_data(self, data):
        self.text.append(data)


def _html_shape(page: str) -> _HtmlShape:
    shape = _HtmlShape()
    shape.feed(page)
    shape.close()
    return shape


_chars = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("`*_[]()<>!&|\\#:/.@~-+=\"' \n\r\t")),
        st.characters(codec="utf-8"),
    ),
    max_size=30,
)
_pieces = st.sampled_from(["![i](http://x.test/a.png)", "[l](http://x.test)", "<b>", "</code>"])
names = st.lists(st.one_of(_chars, _pieces), max_size=4).map("".join)
BENIGN = ("attn_0", "hidden", "input_ids", "/models/m.onnx")
INJECTIONS = [
    "a` ![x](https://evil.test/p.png) [l](https://evil.test) <img src=x onerror=alert(1)> `",
    "</code><script>alert(1)</script>",
    "x|y\n# heading\n\n<details>",
    "&lt;b&gt; &amp; **bold** _em_ ~~s~~",
    "\\`\\|\\",
]


@pytest.mark.parametrize("passed", [True, False])
@pytest.mark.parametrize("evil", INJECTIONS)
def test_known_injections_stay_text(evil: str, passed: bool) -> None:
    _check(evil, evil, evil, evil, passed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=names, output=names, input_name=names, path=names, passed=st.booleans())
def test_no_name_changes_the_report_structure(node, output, input_name, path, passed) -> None:
    _check(node, output, input_name, path, passed)


def _newlines(s: str) -> str:
    return s.replace("\r\n", "\n").replace("\r", "\n")


def _check(node: str, output: str, input_name: str, path: str, passed: bool) -> None:
    benign = _result(*BENIGN, passed=passed)
    evil = _result(node, output, input_name, path, passed=passed)

    md_kinds, md_html, md_codes = _md_structure(markdown_report.render(evil))
    want_kinds, want_html, want_codes = _md_structure(markdown_report.render(benign))
    assert md_kinds == want_kinds  # no link, image, code span, emphasis, cell or block added
    assert md_html == want_html  # the raw HTML is only the report's own <code>/<details>
    assert len(want_codes) == 5
    # every name reads back as itself: the two paths, the node, the output, the input
    names_in_order = (path, path + ".pasa", node, output, input_name)
    assert md_codes == [_as_markdown_reads_it(n) for n in names_in_order]

    page = html_report.render(evil)
    got, want = _html_shape(page), _html_shape(html_report.render(benign))
    assert got.tags == want.tags  # same elements, same attribute names: nothing injected
    text = "".join(got.text)
    for name in (node, output, input_name):
        # line ends read the same on both sides (the page may keep a name's \r\n as it is)
        assert _newlines(name) in _newlines(text)
