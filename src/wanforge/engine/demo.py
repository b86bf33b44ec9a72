"""The demo model: a tiny random-weight Wan 2.2 I2V built in code from the real classes.

It exercises every real code path (two experts, the boundary switch, the VAE image
condition, the umT5 text encoder, the UniPC scheduler) in well under a second per step
on a CPU. The weights are seeded, so two builds are bit-identical; its videos are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

DEMO_SEED = 20250728
TEXT_DIM = 32

_CORPUS = [
    "a cat walks across the room while the camera pans slowly to the left",
    "a person turns around and smiles, soft light, cinematic, shallow depth of field",
    "waves crash on the rocks at sunset, the camera rises above the sea",
    "blurry, low quality, static, worst quality, jpeg artifacts, deformed, extra fingers",
    "the quick brown fox jumps over the lazy dog 0123456789 p3r5on",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz .,;:!?'\"()-_/",
]


def build_tokenizer(vocab_size: int = 256) -> PreTrainedTokenizerFast:
    """Train a small byte-level BPE tokenizer with T5's special tokens (pad=0, eos=1, unk=2)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def build_text_encoder(vocab_size: int) -> UMT5EncoderModel:
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return UMT5EncoderModel(config).eval()


def transformer_config() -> dict[str, Any]:
    """The config of each tiny expert (the real A14B experts share one config too)."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": TEXT_DIM,
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        # the real model's value: rotary positions for up to 1024 latent frames (an 8-second
        # video has 33; at 32 the demo could not make one). A position's angle does not depend
        # on this length, so shorter videos are unchanged.
        "rope_max_seq_len": 1024,
    }


def build_transformer() -> WanTransformer3DModel:
    return WanTransformer3DModel(**transformer_config()).eval()


def build_vae() -> AutoencoderKLWan:
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ).eval()


def build_scheduler(shift: float = 5.0) -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=shift,
    )


@dataclass
class DemoComponents:
    """Everything `WanImageToVideoPipeline(**components.as_kwargs())` needs."""

    tokenizer: PreTrainedTokenizerFast
    text_encoder: UMT5EncoderModel
    vae: AutoencoderKLWan
    scheduler: UniPCMultistepScheduler
    transformer: WanTransformer3DModel
    transformer_2: WanTransformer3DModel
    boundary_ratio: float = 0.9
    name: str = "wanforge-demo"  # the base model named in trained LoRA files

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer,
            "text_encoder": self.text_encoder,
            "vae": self.vae,
            "scheduler": self.scheduler,
            "transformer": self.transformer,
            "transformer_2": self.transformer_2,
            "boundary_ratio": self.boundary_ratio,
        }


def build_demo_components(seed: int = DEMO_SEED) -> DemoComponents:
    """Build the demo model's components; the same seed gives bit-identical weights."""
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = build_text_encoder(len(tokenizer))
        torch.manual_seed(seed + 1)
        vae = build_vae()
        torch.manual_seed(seed + 2)
        transformer = build_transformer()
        torch.manual_seed(seed + 3)
        transformer_2 = build_transformer()
    return DemoComponents(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=build_scheduler(),
        transformer=transformer,
        transformer_2=transformer_2,
    )
