"""Safe rendering: no HTML execution, no remote resources, links not followed, 1 MB responses stay responsive,
right-to-left and CJK text kept intact."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QPoint, Qt, QUrl

from ui.render import SafeBrowser, TextPane

HOSTILE = (
    'Hello <img src="http://203.0.113.9/track.png"> and <script>alert("x")</script>\n\n'
    "![remote](http://203.0.113.9/pixel.png)\n\n"
    "[click me](javascript:alert(1)) and <a href=\"javascript:alert(2)\">raw link</a>\n\n"
    "<iframe src=\"http://203.0.113.9/\"></iframe><style>body{display:none}</style>"
)


@pytest.mark.parametrize("markdown", [True, False])
def test_html_is_shown_as_text_never_run(qtbot, markdown):
    b = SafeBrowser()
    qtbot.addWidget(b)
    b.set_content(HOSTILE, markdown=markdown)
    text = b.toPlainText()
    for literal in ('<script>alert("x")</script>', '<img src="http://203.0.113.9/track.png">', "<iframe", "<style>"):
        assert literal in text
    html = b.document().toHtml()
    assert "<script" not in html.replace("&lt;script", "")
    assert "<img" not in html or 'src="http://203.0.113.9/pixel.png"' in html  # only the Markdown image, refused below


def test_no_resource_is_ever_loaded(qtbot):
    b = SafeBrowser()
    qtbot.addWidget(b)
    b.resize(400, 300)
    b.set_content(HOSTILE, markdown=True)
    b.show()
    qtbot.waitExposed(b)
    b.grab()  # lays out and paints: any image would be requested now
    assert all(u.startswith("http://203.0.113.9/") for u in b.loaded_urls)  # asked for, and answered with nothing
    assert b.loadResource(2, QUrl("http://203.0.113.9/pixel.png")) is None
    assert b.loadResource(2, QUrl("file:///etc/passwd")) is None


def test_links_are_not_followed(qtbot):
    b = SafeBrowser()
    qtbot.addWidget(b)
    b.resize(500, 200)
    b.set_content("[click me](javascript:alert(1))", markdown=True)
    b.show()
    qtbot.waitExposed(b)
    assert not b.openLinks() and not b.openExternalLinks()
    clicked = []
    b.anchorClicked.connect(lambda url: clicked.append(url.toString()))
    cursor = b.document().find("click")
    rect = b.cursorRect(cursor)
    before = b.toPlainText()
    qtbot.mouseClick(b.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() - 5, rect.center().y()))
    assert b.toPlainText() == before and b.source().isEmpty()


def test_a_1mb_response_shows_a_first_part_quickly_then_the_rest(qtbot):
    pane = TextPane()
    qtbot.addWidget(pane)
    pane.resize(600, 400)
    pane.show()
    big = ("lorem ipsum dolor sit amet " * 40 + "\n\n") * 950  # ~1 MB
    assert len(big) > 1_000_000
    t = time.perf_counter()
    pane.set_text(big, markdown=True)
    pane.grab()
    elapsed = time.perf_counter() - t
    print(f"first view of 1 MB: {elapsed * 1000:.0f} ms")
    assert elapsed < 0.25, elapsed  # the whole text takes ~0.6 s here (idle machine)
    assert pane.truncated and pane.more.isVisible()
    assert len(pane.shown_text()) < 25_000
    pane.more.click()
    assert not pane.more.isVisible() and len(pane.shown_text()) > 900_000


def test_rtl_and_cjk_text_is_kept(qtbot):
    b = SafeBrowser()
    qtbot.addWidget(b)
    arabic, hebrew, cjk = "مرحبا بالعالم، كيف حالك؟", "שלום עולם", "你好，世界。日本語のテキスト。한국어"
    b.set_content(f"{arabic}\n\n{hebrew}\n\n{cjk}", markdown=True)
    text = b.toPlainText()
    assert arabic in text and hebrew in text and cjk in text
    block = b.document().findBlock(0)
    assert block.layout() is not None and block.textDirection() == Qt.LayoutDirection.RightToLeft


def test_folded_content_is_not_in_the_document_until_revealed(qtbot):
    pane = TextPane()
    qtbot.addWidget(pane)
    pane.set_text("something harmful", fold_reason="flagged as violence")
    assert pane.folded and pane.shown_text() == "" and "harmful" not in pane.browser.toPlainText()
    assert "violence" in pane.fold_label.text()
    pane.reveal()
    assert pane.shown_text() == "something harmful"


def test_markdown_keeps_multiplication_signs_and_a_poems_line_breaks(qtbot):
    b = SafeBrowser()
    qtbot.addWidget(b)
    b.set_content("So 2*3*4 = 24 and x*y stays.\n\nRoses are red\nviolets are blue\n\n**bold** and *it* still work,\n"
                  "and `a*b` in code.", markdown=True)
    text = b.toPlainText()
    assert "2*3*4 = 24" in text and "x*y" in text
    assert "Roses are red\nviolets are blue" in text
    assert "bold and it still work" in text.replace("\n", " ") and "a*b" in text
    cursor = b.document().find("bold")
    assert cursor.charFormat().fontWeight() > 400  # emphasis is still emphasis


def test_a_pane_switches_to_plain_text_and_back(qtbot):
    pane = TextPane()
    qtbot.addWidget(pane)
    pane.set_text("# Title\n\n- item", markdown=True)
    assert pane.shown_text() == "Title\nitem"
    pane.toggle_plain()
    assert pane.shown_text() == "# Title\n\n- item" and pane.plain_button.isChecked()
    pane.toggle_plain()
    assert pane.shown_text() == "Title\nitem"
    pane.toggle_plain()
    pane.set_text("*new*", markdown=True)  # a new text shows as the page asks again
    assert pane.markdown and pane.shown_text() == "new"
