"""Architectures of the toy world, built from the same classes as Stable Diffusion and CLIP.

Sizes follow ``shared/reference/toolchain.md``'s measured recipe: 32 px images, a factor-2 VAE with
4 latent channels (16x16 latents), a ~1 M-parameter cross-attention UNet and a ~0.2 M-parameter
OpenCLIP whose text tower becomes the pipeline's frozen text encoder.
"""

from __future__ import annotations

import open_clip
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from erase.toy.tokenizer import CONTEXT_LENGTH
from erase.toy.world import IMAGE_SIZE

EMBED_DIM = 64  # CLIP joint embedding and text width: the UNet's cross-attention dim
TEXT_WIDTH = 64
TEXT_LAYERS = 2
TEXT_HEADS = 4
# CLIP's normalisation of the toy images (measured over the world's renders, rounded).
IMAGE_MEAN = (0.80, 0.78, 0.74)
IMAGE_STD = (0.22, 0.22, 0.26)


def clip_model_cfg(vocab_size: int) -> dict:
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {
            "image_size": IMAGE_SIZE,
            "patch_size": 4,
            "width": 64,
            "layers": 3,
            "head_width": 16,
            "mlp_ratio": 4.0,
        },
        "text_cfg": {
            "context_length": CONTEXT_LENGTH,
            "vocab_size": vocab_size,
            "width": TEXT_WIDTH,
            "heads": TEXT_HEADS,
            "layers": TEXT_LAYERS,
        },
    }


def build_clip(vocab_size: int) -> open_clip.CLIP:
    cfg = clip_model_cfg(vocab_size)
    return open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=IMAGE_SIZE,
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )


# Stable Diffusion 1.x's noise schedule: a low-terminal-SNR variant was measured to break sampling.
_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**_BETAS)


def sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


@torch.no_grad()
def clip_text_to_hf(clip: open_clip.CLIP, eos_token_id: int, bos_token_id: int) -> CLIPTextModel:
    """Convert open_clip's text tower into a transformers ``CLIPTextModel``.

    The fused attention in-projection is split into q/k/v; ``last_hidden_state`` then equals
    open_clip's tokens after ``ln_final``, which is what Stable Diffusion's UNet attends to.
    """
    width = clip.token_embedding.weight.shape[1]
    config = CLIPTextConfig(
        vocab_size=clip.token_embedding.weight.shape[0],
        hidden_size=width,
        intermediate_size=clip.transformer.resblocks[0].mlp.c_fc.out_features,
        num_hidden_layers=len(clip.transformer.resblocks),
        num_attention_heads=clip.transformer.resblocks[0].attn.num_heads,
        max_position_embeddings=clip.positional_embedding.shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        projection_dim=clip.text_projection.shape[1],
        eos_token_id=eos_token_id,
        bos_token_id=bos_token_id,
        pad_token_id=eos_token_id,
    )
    hf = CLIPTextModel(config).eval()
    sd = {
        "text_model.embeddings.token_embedding.weight": clip.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": clip.positional_embedding,
        "text_model.final_layer_norm.weight": clip.ln_final.weight,
        "text_model.final_layer_norm.bias": clip.ln_final.bias,
    }
    for i, block in enumerate(clip.transformer.resblocks):
        p = f"text_model.encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        sd |= {
            p + "self_attn.q_proj.weight": q,
            p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k,
            p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v,
            p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": block.attn.out_proj.weight,
            p + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            p + "layer_norm1.weight": block.ln_1.weight,
            p + "layer_norm1.bias": block.ln_1.bias,
            p + "layer_norm2.weight": block.ln_2.weight,
            p + "layer_norm2.bias": block.ln_2.bias,
            p + "mlp.fc1.weight": block.mlp.c_fc.weight,
            p + "mlp.fc1.bias": block.mlp.c_fc.bias,
            p + "mlp.fc2.weight": block.mlp.c_proj.weight,
            p + "mlp.fc2.bias": block.mlp.c_proj.bias,
        }
    own = hf.state_dict()
    # transformers 5 may or may not keep the "text_model." prefix in state_dict keys.
    if not any(key.startswith("text_model.") for key in own):
        sd = {key.removeprefix("text_model."): val for key, val in sd.items()}
    missing = set(own) - set(sd) - {k for k in own if k.endswith("position_ids")}
    if missing:
        raise RuntimeError(f"text tower conversion left weights unset: {sorted(missing)}")
    hf.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    return hf
