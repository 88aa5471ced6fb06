"""``erase serve RUN``: a local page to audit an erasure by hand (``erase.serve``): type a prompt, see
the base model's and the erased model's images side by side (same seed) with the judge's verdicts,
and try the prompts the attacks found with one click."""

from __future__ import annotations

from dataclasses import dataclass

from erase.jobs.base import FieldError, JobResult, JudgeOptions, ModelOptions, option, positive


@dataclass(frozen=True, kw_only=True)
class ServeJob(ModelOptions, JudgeOptions):
    """Serve a page that draws a prompt on the base and the erased model side by side."""

    COMMAND = "serve"

    run: str = option(help="an erase run folder (or its delta file)", positional=True)
    concept: str | None = option(None, "the concept whose group the judge reads (default: the one erased)")
    model: str | None = option(None, "base model (default: the one the delta records)")
    host: str = option("127.0.0.1", "address to listen on (127.0.0.1: this machine only)")
    port: int = option(7860, "port to listen on (0: any free port)")
    steps: int = option(25, "sampling steps")
    guidance: float = option(7.5, "classifier-free guidance scale")

    def check(self) -> None:
        super().check()
        positive(self, "steps")
        if not 0 <= self.port <= 65535:
            raise FieldError("port", f"must be a port number from 0 to 65535, got {self.port}")
        if not self.host.strip():
            raise FieldError("host", "is empty; pass an address such as 127.0.0.1")


def build(cfg: ServeJob):
    """The server, ready to serve (``serve_forever``), and its address."""
    from erase.audit import delta_applied
    from erase.card import edit_records
    from erase.delta import check_base, delta_path, delta_tensor_names, read_meta
    from erase.models import model_fingerprint
    from erase.serve import Drawer, found_prompts, make_server

    # 1. Check inputs before loading anything.
    path = delta_path(cfg.run)
    meta = read_meta(path)
    _, target = cfg.erased_concept(meta, path)
    base = cfg.model or meta["base_model"]
    check_base(path, meta, model_fingerprint(base))
    _, attack = edit_records(path)
    attack_dir = next(
        (d for d in (path.parent / "attack", path.parent.parent / "attack") if d.is_dir()), None
    )
    found, embeddings = found_prompts(attack, attack_dir, target.heldout)

    # 2. Load the base; check the edit fits it; the attacks' tokens into the shared text encoder.
    pipe = cfg.load(base)
    judge = cfg.load_judge(cfg.judge)
    # Both sides' values of the edited tensors kept in memory: a request swaps them, reads no file.
    names = set(delta_tensor_names(path))
    with delta_applied(pipe, path, model_fingerprint(base)):
        edit = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if n in names}
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters() if n in names}
    drawer = Drawer(pipe, judge, target.group, before, edit, steps=cfg.steps, guidance=cfg.guidance)
    for token, file in embeddings:
        pipe.load_textual_inversion(str(file), token=token)
    info = {
        "title": f"{base}: {target.name} erased by {meta['method']}",
        "about": f"Same prompt and seed on both models; judge {cfg.judge} reads {target.group.name} "
        f"({', '.join(target.group.labels)}). {cfg.steps} sampling steps, guidance {cfg.guidance:g}.",
        "example": target.heldout[0],
        "found": found,
    }
    server = make_server(drawer, info, cfg.host, cfg.port)
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"


def run(cfg: ServeJob) -> JobResult:
    server, url = build(cfg)
    print(f"serving {url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return JobResult(None, {"url": url})
