"""``erase serve`` (issue 21): the side-by-side page, in a real browser (Debian's Chromium, as the
report's test), on the toy world: type a prompt, see two images and two verdicts; an attack's found
prompt is one click; bad requests get one line; the edit is swapped in and out, never leaked."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import pytest
import torch

from erase.cli import main
from erase.jobs.serve import ServeJob, build


@pytest.fixture(scope="module")
def served(uce_red_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("serve") / "uce"
    shutil.copytree(uce_red_run, run_dir)
    # An attack record beside the edit, as `erase attack` leaves it: one found prompt to offer.
    (run_dir / "attack").mkdir()
    record = {
        "results": {
            "attacks": [
                {
                    "attack": "prompt",
                    "erased": {"prompts": ["<b>shape</b><script>window.pwned=1</script> red circle"]},
                }
            ]
        }
    }
    (run_dir / "attack" / "attack.json").write_text(json.dumps(record))
    server, url = build(ServeJob(run=str(run_dir), port=0, steps=4))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, url
    server.shutdown()
    server.server_close()


def post(url, body: bytes):
    req = urllib.request.Request(url + "draw", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_draw_request_returns_both_sides_and_leaves_the_base_in_place(served):
    server, url = served
    status, body = post(url, json.dumps({"prompt": "a drawing of a red square", "seed": 2000}).encode())
    assert status == 200 and set(body) == {"base", "erased"}
    assert body["base"]["verdict"] == "red" and body["erased"]["verdict"] != "red"  # UCE's red -> blue
    assert (
        body["base"]["image"].startswith("data:image/png;base64,")
        and body["base"]["image"] != body["erased"]["image"]
    )
    drawer = server.drawer
    assert all(torch.equal(drawer.params[n], drawer.base[n]) for n in drawer.params)  # the base, back
    assert any(not torch.equal(drawer.edit[n], drawer.base[n]) for n in drawer.params)


@pytest.mark.parametrize(
    "body,message",
    [
        (b"not json", "not JSON"),
        (json.dumps({"prompt": "  "}).encode(), "the prompt is empty"),
        (json.dumps({"prompt": "x" * 500}).encode(), "keep it under"),
        (json.dumps({"prompt": "a red circle", "seed": -1}).encode(), "the seed must be a whole number"),
        (json.dumps({"prompt": "a red circle", "seed": "1"}).encode(), "the seed must be a whole number"),
    ],
)
def test_bad_requests_get_one_line(served, body, message):
    status, reply = post(served[1], body)
    assert status == 400 and message in reply["error"] and "\n" not in reply["error"]


def test_the_page_in_a_browser_shows_two_images_and_two_verdicts(served, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.test_pipeline import _chromium

    _, url = served
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        page.fill("#prompt", "a picture of a red triangle")
        page.click("#draw")
        page.wait_for_function(
            "document.getElementById('erased-verdict').textContent.startsWith('judge:')", timeout=60000
        )
        verdicts = [page.text_content(f"#{side}-verdict") for side in ("base", "erased")]
        sizes = page.evaluate(
            "['base-image', 'erased-image'].map(i => document.getElementById(i).naturalWidth)"
        )
        # The attack's found prompt is a button; its text shows as text, not as HTML.
        found = page.locator("#found button")
        label = found.first.text_content()
        bold = page.locator("#found b, #found script").count()
        found.first.click()
        page.wait_for_function("document.getElementById('prompt').value.includes('shape')")
        page.wait_for_function("!document.getElementById('draw').disabled", timeout=60000)
        shown = page.input_value("#prompt")
        pwned = page.evaluate("window.pwned")
        page.screenshot(path=str(tmp_path / "serve.png"))
        browser.close()
    assert verdicts[0] == "judge: red (" + verdicts[0].split("(")[1] and verdicts[1].startswith("judge: ")
    assert sizes[0] > 0 and sizes[1] > 0
    found_prompt = "<b>shape</b><script>window.pwned=1</script> red circle"
    assert label == f"prompt: {found_prompt}" and bold == 0 and shown == found_prompt and pwned is None


def test_bad_serve_options_are_refused_before_loading(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "erase/toy/oracles/color=red", "--port", "70000"]) == 2
    assert "port must be a port number from 0 to 65535, got 70000" in capsys.readouterr().err


def test_found_prompts_are_the_attacks_own_words_not_the_held_out_prompts(tmp_path):
    from erase.serve import found_prompts

    heldout = ["a drawing of a red cross", "red cross, simple icon"]
    (tmp_path / "inversion").mkdir()
    (tmp_path / "inversion" / "learned_embeds.safetensors").write_bytes(b"x")
    attacks = [
        {"attack": "plain", "erased": {"prompts": heldout}},
        {"attack": "relearn", "erased": {"prompts": heldout, "optimizer": "adam"}},
        {
            "attack": "prompt",
            "erased": {"prompts": ["w w w a drawing of a red cross", "w w w red cross", "third"]},
        },
        {
            "attack": "inversion",
            "erased": {
                "prompts": ["a <x-inv>"],
                "token": "<x-inv>",
                "embedding": "inversion/learned_embeds.safetensors",
            },
        },
        {
            "attack": "inversion-lost",
            "erased": {"prompts": ["a <y-inv>"], "token": "<y-inv>", "embedding": "gone.safetensors"},
        },
    ]
    found, embeddings = found_prompts({"results": {"attacks": attacks}}, tmp_path, heldout)
    assert [f["prompt"] for f in found] == ["w w w a drawing of a red cross", "w w w red cross", "a <x-inv>"]
    assert embeddings == [("<x-inv>", tmp_path / "inversion" / "learned_embeds.safetensors")]
    assert found_prompts(None, None, heldout) == ([], [])
