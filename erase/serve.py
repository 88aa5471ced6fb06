"""``erase serve RUN``: a page where a person types a prompt and sees what the base model and the
erased model draw for it, side by side with the same seed, each with the judge's verdict; the prompts
the attacks found (``erase attack``) are one click away.

Python's own HTTP server, no web framework: it binds to 127.0.0.1 unless told otherwise, draws one
request at a time (one model in memory, the edit's tensors swapped in and out), and the page puts
every text it shows through ``textContent``, so a prompt is never read as HTML.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from erase.errors import EraseError

MAX_PROMPT = 400  # characters; a CLIP tokenizer reads 77 tokens anyway

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>erase: base vs erased</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }
form { display: flex; gap: .5em; margin-bottom: 1em; }
#prompt { flex: 1; font-size: 1.1em; padding: .3em; }
#seed { width: 6em; }
.side { display: inline-block; width: 48%; vertical-align: top; text-align: center; }
.side img { width: 100%; max-width: 512px; image-rendering: pixelated; border: 1px solid #ccc; min-height: 64px; }
.verdict { font-size: 1.2em; margin: .4em 0; }
#found button { margin: .2em; }
#error { color: #b00; }
</style></head>
<body>
<h1 id="title"></h1>
<p id="about"></p>
<form id="form">
  <input id="prompt" name="prompt" placeholder="a prompt" autocomplete="off">
  <label>seed <input id="seed" name="seed" type="number" min="0" value="0"></label>
  <button id="draw" type="submit">Draw</button>
</form>
<div id="found"></div>
<p id="error"></p>
<div>
  <div class="side"><h2>base</h2><img id="base-image" alt="base"><div class="verdict" id="base-verdict"></div></div>
  <div class="side"><h2>erased</h2><img id="erased-image" alt="erased"><div class="verdict" id="erased-verdict"></div></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
async function info() {
  const r = await (await fetch("/info")).json();
  $("title").textContent = r.title;
  $("about").textContent = r.about;
  $("prompt").value = r.example;
  for (const f of r.found) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = f.attack + ": " + f.prompt;
    b.onclick = () => { $("prompt").value = f.prompt; $("form").requestSubmit(); };
    $("found").appendChild(b);
  }
}
$("form").onsubmit = async (e) => {
  e.preventDefault();
  $("error").textContent = "";
  $("draw").disabled = true;
  for (const side of ["base", "erased"]) $(side + "-verdict").textContent = "drawing...";
  try {
    const r = await fetch("/draw", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({prompt: $("prompt").value, seed: Number($("seed").value)})});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error);
    for (const side of ["base", "erased"]) {
      $(side + "-image").src = body[side].image;
      $(side + "-verdict").textContent = "judge: " + body[side].verdict + " (" + body[side].confidence.toFixed(2) + ")";
    }
  } catch (err) {
    $("error").textContent = String(err.message || err);
    for (const side of ["base", "erased"]) $(side + "-verdict").textContent = "";
  } finally {
    $("draw").disabled = false;
  }
};
info();
</script>
</body></html>
"""


def found_prompts(
    attack_record: dict | None, attack_dir: Path | None, heldout
) -> tuple[list[dict], list[tuple[str, Path]]]:
    """The prompts the attacks found on the erased model (two per attack), and the inversion
    attacks' embeddings (token, file) that those prompts need loaded. An attack whose prompts are
    the concept's held-out prompts themselves (none at all, or one that changed the weights) found
    no prompt to offer."""
    found, embeddings = [], []
    for a in (attack_record or {}).get("results", {}).get("attacks", []):
        erased = a.get("erased") or {}
        if not set(erased.get("prompts") or heldout) - set(heldout):
            continue
        if "token" in erased:
            path = attack_dir / erased["embedding"] if attack_dir and erased.get("embedding") else None
            if path is None or not path.is_file():
                continue
            embeddings.append((erased["token"], path))
        found += [{"attack": a["attack"], "prompt": p} for p in erased["prompts"][:2]]
    return found, embeddings


class Drawer:
    """One pipeline, its edit swapped in and out: draws a prompt on both models with one seed."""

    def __init__(self, pipe, judge, group, base: dict, edit: dict, *, steps: int, guidance: float):
        """``base`` and ``edit``: the values of the edited UNet tensors in each model."""
        self.pipe, self.judge, self.group, self.steps, self.guidance = pipe, judge, group, steps, guidance
        named = dict(pipe.unet.named_parameters())
        self.params = {n: named[n] for n in edit}
        self.base, self.edit = base, edit
        self.lock = threading.Lock()
        self._set(base)

    @torch.no_grad()
    def _set(self, values: dict[str, torch.Tensor]) -> None:
        for n, p in self.params.items():
            p.copy_(values[n])

    def draw(self, prompt: str, seed: int) -> dict:
        from erase.generate import generate

        out = {}
        with self.lock:
            for side, values in (("base", self.base), ("erased", self.edit)):
                self._set(values)
                (image,) = generate(
                    self.pipe, [prompt], [seed], steps=self.steps, guidance=self.guidance, progress=False
                )
                v = self.judge.verdicts(self.group, [image], [prompt])
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                out[side] = {
                    "image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(),
                    "verdict": v.predicted[0],
                    "confidence": float(v.confidence[0]),
                }
            self._set(self.base)
        return out


def check_request(body: bytes, pipe) -> tuple[str, int]:
    """The prompt and seed of a draw request, or an EraseError saying what is wrong with them."""
    from erase.tokens import check_pipeline_prompts

    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise EraseError('the request is not JSON; send {"prompt": ..., "seed": ...}') from None
    prompt, seed = data.get("prompt"), data.get("seed", 0)
    if not isinstance(prompt, str) or not prompt.strip():
        raise EraseError("the prompt is empty; type one")
    if len(prompt) > MAX_PROMPT:
        raise EraseError(f"the prompt is {len(prompt)} characters; keep it under {MAX_PROMPT}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise EraseError(f"the seed must be a whole number from 0 to {2**31 - 1}, got {seed!r}")
    check_pipeline_prompts(pipe, [prompt])
    return prompt.strip(), seed


def make_server(drawer: Drawer, info: dict, host: str, port: int) -> ThreadingHTTPServer:
    """The HTTP server (not yet serving): GET / (the page), GET /info, POST /draw."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status, obj) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif self.path == "/info":
                self._json(HTTPStatus.OK, info)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

        def do_POST(self):
            if self.path != "/draw":
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                prompt, seed = check_request(self.rfile.read(min(length, 1 << 16)), drawer.pipe)
            except EraseError as e:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            self._json(HTTPStatus.OK, drawer.draw(prompt, seed))

        def log_message(self, fmt, *args):  # one line per request, on stderr as http.server does
            if self.path != "/info":
                super().log_message(fmt, *args)

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise EraseError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --port") from None
    server.drawer = drawer
    return server
