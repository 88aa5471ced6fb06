"""Shared by the benchmarks: the real SD 1.5 architecture with random weights (no download)."""

from __future__ import annotations

import torch


def sd15_pipeline(sample_size: int = 32):
    """SD 1.5's UNet (859 M parameters) and a CLIP ViT-L/14-shaped text encoder, random weights.

    ``sample_size`` 32 is 256 px: a 512 px iteration costs minutes on 2 CPU cores.
    """
    torch.manual_seed(0)
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from erase.toy.tokenizer import hf_tokenizer, learn_merges, world_words

    tok = hf_tokenizer(learn_merges(world_words()))
    tok.model_max_length = 77
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        layers_per_block=2,
    )
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=2,
    )
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=te,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
