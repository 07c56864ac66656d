"""``plugin.chat RUN --web``: the gradio chat page, served on 127.0.0.1 by the real command, driven by a real
headless Chromium (selenium): a question typed into the page gets the reply ``plugin.chat --prompt`` prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                                   reason="no headless browser: bash scripts/setup_browser.sh")]

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from ..launches import free_port  # noqa: E402

QUESTION = "Name a colour."


@pytest.fixture(scope="module")
def embedded_adapter(tmp_path_factory):
    """An adapter on the embedded SmolLM2-135M-Instruct, so the page shows real words (a random tiny model answers
    in blank lines)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from plugin.models.embedded import embedded_model_path
    from plugin.tuners import MoRConfig

    folder = tmp_path_factory.mktemp("web") / "smol_mor"
    torch.manual_seed(0)
    get_peft_model(AutoModelForCausalLM.from_pretrained(embedded_model_path()),
                   MoRConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


def _browser():
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)


def test_a_question_typed_into_the_page_gets_the_greedy_reply(embedded_adapter, capsys):
    from plugin.chat import main as chat_main

    assert chat_main([str(embedded_adapter), "--prompt", QUESTION, "--temperature", "0",
                      "--max_new_tokens", "12"]) == 0
    expected = " ".join(capsys.readouterr().out.split())
    assert expected  # words, so the page has something to show
    port = free_port()
    page = subprocess.Popen([sys.executable, "-m", "plugin.chat", str(embedded_adapter), "--web", "--port", str(port),
                             "--temperature", "0", "--max_new_tokens", "12"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    browser = None
    try:
        deadline = time.time() + 180
        while True:
            assert page.poll() is None, page.stderr.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the page did not come up"
                time.sleep(0.5)
        browser = _browser()
        browser.get(f"http://127.0.0.1:{port}/")
        box = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "textarea"))
        assert "smol_mor" in browser.page_source  # the adapter is the one selected
        box.send_keys(QUESTION)
        box.send_keys(Keys.ENTER)

        def answered(b):
            bots = b.find_elements(By.CSS_SELECTOR, "[data-testid='bot']")
            return bots and " ".join(bots[-1].text.split()) == expected and bots[-1].text

        try:
            WebDriverWait(browser, 120).until(answered)
        except TimeoutException:  # say what the page showed instead (a bare timeout is all selenium reports)
            turns = browser.find_elements(By.CSS_SELECTOR, "[data-testid='user'], [data-testid='bot']")
            shown = [m.text for m in turns]
            raise AssertionError(f"no reply {expected!r} within 120 s; the chat showed {shown}") from None
        assert [m.text for m in browser.find_elements(By.CSS_SELECTOR, "[data-testid='user']")] == [QUESTION]
    finally:
        if browser is not None:
            browser.quit()
        page.terminate()
        page.wait(timeout=30)
