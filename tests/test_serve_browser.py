"""The page in a real browser: Debian's chromium driven by Playwright against a real ``mmp serve``.

It types a message, attaches a screenshot and a voice note, submits, and checks that the predicted
label, one probability bar per label and the similar past tickets (with thumbnails) appear. The page's
screenshot is saved to a path printed on the terminal. Never downloads a browser (``playwright install``).
"""

import os
from pathlib import Path

import pytest

from serve_setup import served_model, start_server
from serving.launch import stop

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def submit_ticket(url: str, text: str, image: Path, audio: Path, shot: Path) -> dict:
    """Fill the page's form, submit, wait for the answer; returns what the page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 1200})
            page.goto(url)
            page.wait_for_selector("#status:has-text('ready')")
            page.fill("#message", text)
            page.set_input_files("#screenshot", str(image))
            page.set_input_files("#voice", str(audio))
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=60_000)
            page.wait_for_function("[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)")
            shown = {
                "predicted": page.inner_text("#predicted"),
                "bars": page.eval_on_selector_all(".bar", "bars => bars.map(b => [b.dataset.label, b.querySelector('.p').textContent])"),
                "similar": page.eval_on_selector_all("#similar .ticket", "ts => ts.map(t => [t.dataset.id, t.querySelector('.text').textContent])"),
                "thumbnails": page.eval_on_selector_all("#similar img", "is => is.map(i => i.naturalWidth)"),
                "missing": page.inner_text("#missing"),
                "failure_hidden": page.is_hidden("#failure"),
                "said": page.inner_text("#transcript .said") if page.is_visible("#transcript") else None,
                "on_screen": page.inner_text("#screen-text .said") if page.is_visible("#screen-text") else None,
            }
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            return shown
        finally:
            browser.close()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_page_predicts_and_shows_similar_tickets(tmp_path_factory):
    served = served_model(tmp_path_factory)
    proc, url = start_server(served)
    try:
        shot = tmp_path_factory.mktemp("browser") / "serve.png"
        shown = submit_ticket(url, "message number 4 & bold", served.root / "img" / "4.png", served.root / "aud" / "4.wav", shot)
    finally:
        stop(proc)
    print(f"\nbrowser: page screenshot saved to {shot}")
    assert shown["failure_hidden"]
    assert shown["predicted"] in ("a", "b")
    assert sorted(label for label, _ in shown["bars"]) == ["a", "b"] and shown["bars"][0][0] == shown["predicted"]
    assert abs(sum(float(p.rstrip("%")) for _, p in shown["bars"]) - 100) < 0.5
    assert len(shown["similar"]) == 5 and shown["similar"][0] == ["item004", "message number 4 & bold"]
    assert shown["thumbnails"] and all(w == 160 for w in shown["thumbnails"])
    assert shown["missing"] == "all modalities used"
    assert shot.stat().st_size > 10_000


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_page_shows_what_the_voice_note_says_and_the_screenshot_shows(tmp_path_factory):
    """A recorded voice note (the demo's) and a drawn error dialog: the page shows their words."""
    from test_search_words import dialog_png, speech_clip

    served = served_model(tmp_path_factory)
    folder = tmp_path_factory.mktemp("words")
    voice, dialog = speech_clip(folder / "voice.ogg"), dialog_png(folder / "dialog.png")
    proc, url = start_server(served)
    try:
        shown = submit_ticket(url, "see attached", dialog, voice, folder / "words.png")
    finally:
        stop(proc)
    print(f"\nbrowser: page screenshot saved to {folder / 'words.png'}")
    assert shown["failure_hidden"] and shown["predicted"] in ("a", "b")
    assert "payment" in shown["said"].lower() and "downgraded" in shown["said"].lower(), shown["said"]
    assert "Login failed" in shown["on_screen"] and "password" in shown["on_screen"], shown["on_screen"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium)")
def test_an_agent_signs_in_predicts_and_signs_out(tmp_path_factory):
    """A token-protected service: the page shows its sign-in form; a wrong token is refused; the right one
    gives an HttpOnly session cookie (no script sees it); predict works; sign-out makes the API 401 again."""
    from playwright.sync_api import sync_playwright

    served = served_model(tmp_path_factory)
    token = "agents-only-7f3a"
    proc, url = start_server(served, token=token)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page()
                page.goto(url)
                page.wait_for_selector("#sign-in:not([hidden])")
                assert page.is_hidden("#ticket")
                page.fill("#token", "wrong")
                page.click("#sign-in-submit")
                page.wait_for_selector("#sign-in-failure:not([hidden])")
                assert "401" in page.inner_text("#sign-in-failure")
                page.fill("#token", token)
                page.click("#sign-in-submit")
                page.wait_for_selector("#status:has-text('ready')")
                cookies = {c["name"]: c for c in page.context.cookies()}
                session = cookies["mmp_session"]
                assert session["httpOnly"] and session["sameSite"] == "Strict" and token not in session["value"]
                assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts
                assert token not in page.url
                page.fill("#message", "message number 4 & bold")
                page.click("#submit")
                page.wait_for_selector("#result:not([hidden])", timeout=60_000)
                assert page.inner_text("#predicted") in ("a", "b")
                page.click("#sign-out")
                page.wait_for_selector("#sign-in:not([hidden])")
                assert page.evaluate("fetch('/readyz').then(r => r.status)") == 401
                assert "mmp_session" not in {c["name"] for c in page.context.cookies()}
            finally:
                browser.close()
    finally:
        stop(proc)
