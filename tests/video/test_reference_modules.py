"""Chapter 08's module references against independent implementations: transformers' ViViT embedding, the contract's
sum, joint attention with masks, a transliteration of scenic's MBT loop; their properties; and the checks' verdicts
on the mutants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from xmodal_ref.video.reference import BottleneckFusionEncoder, DividedSpaceTimeBlock, TubeletEmbedding


def gaussian(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- TubeletEmbedding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "tubelet", "hidden"),
    [((2, 8, 3, 16, 16), (2, 4, 4), 12), ((1, 6, 2, 12, 12), (3, 4, 2), 5), ((2, 7, 3, 10, 10), (2, 4, 4), 8)],
)
def test_tubelet_embedding_equals_transformers_vivit(shape, tubelet, hidden) -> None:
    pytest.importorskip("transformers", reason="the ViViT peer is transformers' VivitTubeletEmbeddings (pip install)")
    from transformers import VivitConfig
    from transformers.models.vivit.modeling_vivit import VivitTubeletEmbeddings

    _, frames, channels, height, _ = shape
    config = VivitConfig(
        num_frames=frames, image_size=height, tubelet_size=list(tubelet), hidden_size=hidden, num_channels=channels
    )
    peer = VivitTubeletEmbeddings(config)
    ours = TubeletEmbedding(channels, hidden, tubelet)
    ours.proj.load_state_dict(peer.projection.state_dict())
    video = gaussian(*shape, seed=0)
    assert torch.equal(ours(video), peer(video))


@given(
    batch=st.integers(1, 2),
    frames=st.integers(1, 6),
    channels=st.integers(1, 3),
    height=st.integers(1, 7),
    width=st.integers(1, 7),
    tubelet=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    seed=st.integers(0, 10_000),
)
def test_tubelet_tokens_follow_the_contract_sum(batch, frames, channels, height, width, tubelet, seed) -> None:
    t, ph, pw = tubelet
    assume(frames >= t and height >= ph and width >= pw)
    torch.manual_seed(seed)
    module = TubeletEmbedding(channels, 4, tubelet)
    video = gaussian(batch, frames, channels, height, width, seed=seed).double()
    weight, bias = module.proj.weight.double(), module.proj.bias.double()
    tokens = module.double()(video)
    grid_h, grid_w = height // ph, width // pw
    assert tokens.shape == (batch, frames // t * grid_h * grid_w, 4)
    for n in range(tokens.shape[1]):
        i_t, i_h, i_w = n // (grid_h * grid_w), n // grid_w % grid_h, n % grid_w
        tube = video[:, i_t * t : (i_t + 1) * t, :, i_h * ph : (i_h + 1) * ph, i_w * pw : (i_w + 1) * pw]
        expected = bias + torch.einsum("bacuv,dcauv->bd", tube, weight)
        assert torch.allclose(tokens[:, n], expected, atol=1e-12)


def test_tubelet_tokens_of_a_static_clip_are_a_2d_patch_embedding_with_the_summed_kernel() -> None:
    module = TubeletEmbedding(3, 6, (2, 4, 4))
    frame = gaussian(2, 3, 8, 12, seed=1)
    clip = frame[:, None].expand(-1, 6, -1, -1, -1)  # (B, T=6, C, H, W), every frame the same
    image_tokens = F.conv2d(frame, module.proj.weight.sum(dim=2), module.proj.bias, stride=4).flatten(2).mT
    assert torch.allclose(module(clip), image_tokens.repeat(1, 3, 1), atol=1e-5)  # 3 tubes in time, each the same


# --- DividedSpaceTimeBlock --------------------------------------------------------------------


def randomised_block(dim: int, heads: int, seed: int) -> DividedSpaceTimeBlock:
    """A block whose every parameter (LayerNorms and temporal_fc included) is moved off its initial value."""
    torch.manual_seed(seed)
    block = DividedSpaceTimeBlock(dim, heads)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.add_(torch.randn(parameter.shape) * 0.2)
    return block


def joint_attention_with_masks(block: DividedSpaceTimeBlock, x: torch.Tensor) -> torch.Tensor:
    """The contract's peer: attention over all T·N tokens through the same modules, a boolean attn_mask blocking
    pairs at different spatial positions (time) and then pairs in different frames (space)."""
    batch, frames, patches, dim = x.shape
    frame, position = torch.meshgrid(torch.arange(frames), torch.arange(patches), indexing="ij")
    frame, position = frame.flatten(), position.flatten()
    tokens = x.reshape(batch, frames * patches, dim)
    h = block.temporal_norm(tokens)
    time_mask = position[:, None] != position[None, :]
    tokens = tokens + block.temporal_fc(block.temporal_attn(h, h, h, attn_mask=time_mask)[0])
    h = block.spatial_norm(tokens)
    tokens = tokens + block.spatial_attn(h, h, h, attn_mask=frame[:, None] != frame[None, :])[0]
    return (tokens + block.mlp(block.mlp_norm(tokens))).reshape(batch, frames, patches, dim)


@pytest.mark.parametrize(
    ("shape", "heads"), [((2, 4, 6, 16), 4), ((1, 1, 5, 16), 4), ((2, 3, 1, 8), 2), ((1, 5, 3, 8), 2)]
)
def test_divided_block_equals_joint_attention_with_masks(shape, heads) -> None:
    block = randomised_block(shape[-1], heads, seed=sum(shape))
    x = gaussian(*shape, seed=1)
    assert torch.allclose(block(x), joint_attention_with_masks(block, x), atol=1e-5)


def test_divided_block_at_initialisation_is_an_image_vit_block_on_every_frame() -> None:
    torch.manual_seed(0)
    block = DividedSpaceTimeBlock(16, 4)
    assert not block.temporal_fc.weight.any() and not block.temporal_fc.bias.any()
    x = gaussian(2, 3, 5, 16, seed=2)
    frames = x.flatten(0, 1)  # (B*T, N, D): the frames as independent images
    h = block.spatial_norm(frames)
    frames = frames + block.spatial_attn(h, h, h)[0]
    image_block = frames + block.mlp(block.mlp_norm(frames))
    assert torch.allclose(block(x), image_block.view_as(x), atol=1e-6)


def test_divided_block_on_a_static_clip_gives_every_frame_the_single_frame_result() -> None:
    block = randomised_block(8, 2, seed=3)
    frame = gaussian(2, 1, 4, 8, seed=4)  # (B, T=1, N, D)
    out = block(frame.expand(-1, 5, -1, -1))  # uniform time attention over identical frames = one frame
    assert torch.allclose(out, block(frame).expand(-1, 5, -1, -1), atol=1e-5)


# --- BottleneckFusionEncoder ------------------------------------------------------------------


def encoder_layers(count: int, dim: int, seed: int) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList(
        nn.TransformerEncoderLayer(dim, 2, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        for _ in range(count)
    )


def fusion_encoder(count: int, fusion_layer: int, bottlenecks: int, dim: int = 16) -> BottleneckFusionEncoder:
    encoder = BottleneckFusionEncoder(
        encoder_layers(count, dim, 0), encoder_layers(count, dim, 1), dim, fusion_layer, bottlenecks
    )
    with torch.no_grad():
        encoder.bottleneck.normal_()  # N(0, 1), so that it matters
    return encoder


def scenic_encoder(x: dict, bottleneck: torch.Tensor, encoders: dict, fusion_layer: int, num_layers: int):
    """Test oracle, transliterated (jnp → torch) from google-research/scenic scenic/projects/mbt/model.py,
    ``Encoder.__call__`` with use_bottleneck=True and modality_fusion=('rgb', 'spectrogram'); positional embeddings,
    the final LayerNorm and dropout left out. ``bottleneck`` is already tiled to the batch, as in ``MBT.__call__``."""
    modality_fusion = ("rgb", "spectrogram")
    for lyr in range(num_layers):
        if lyr < fusion_layer:
            for modality in modality_fusion:
                x[modality] = encoders[modality][lyr](x[modality])
        else:
            bottle = []
            for modality in modality_fusion:
                t_mod = x[modality].shape[1]
                in_mod = torch.cat([x[modality], bottleneck], dim=1)
                out_mod = encoders[modality][lyr](in_mod)
                x[modality] = out_mod[:, :t_mod]
                bottle.append(out_mod[:, t_mod:])
            bottleneck = torch.mean(torch.stack(bottle, dim=-1), dim=-1)
    return x, bottleneck


@pytest.mark.parametrize(
    ("count", "fusion_layer", "bottlenecks"), [(3, 0, 4), (3, 1, 2), (3, 2, 4), (3, 3, 2), (2, 1, 1)]
)
def test_bottleneck_fusion_equals_scenic_encoder_loop(count, fusion_layer, bottlenecks) -> None:
    encoder = fusion_encoder(count, fusion_layer, bottlenecks)
    video, audio = gaussian(2, 5, 16, seed=5), gaussian(2, 3, 16, seed=6)
    x, z = scenic_encoder(
        {"rgb": video, "spectrogram": audio},
        encoder.bottleneck.expand(2, -1, -1),
        {"rgb": encoder.video_layers, "spectrogram": encoder.audio_layers},
        fusion_layer,
        count,
    )
    for ours, theirs in zip(encoder(video, audio), (x["rgb"], x["spectrogram"], z), strict=True):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_bottleneck_fusion_without_fusion_layers_runs_each_stack_alone_and_returns_the_parameter() -> None:
    encoder = fusion_encoder(3, 3, 4)
    video = gaussian(2, 5, 16, seed=7)
    out_video, out_audio, z = encoder(video, gaussian(2, 3, 16, seed=8))
    alone = video
    for layer in encoder.video_layers:
        alone = layer(alone)
    assert torch.allclose(out_video, alone, atol=1e-6)
    assert torch.equal(z, encoder.bottleneck.expand(2, -1, -1))
    assert torch.equal(encoder(video, gaussian(2, 3, 16, seed=9))[0], out_video)  # the audio never reaches the video
    assert out_audio.shape == (2, 3, 16)


@pytest.mark.parametrize(
    ("fusion_layer", "bottlenecks", "exchanges"),
    [
        (0, 2, True),  # layer 0 writes the video into z, layer 1's audio reads it
        (1, 2, False),  # only the last layer is fused: both modalities read the same (initial) z there
        (0, 0, False),  # no bottleneck token, no way across
    ],
)
def test_bottleneck_fusion_modalities_meet_only_through_z(fusion_layer, bottlenecks, exchanges) -> None:
    encoder = fusion_encoder(2, fusion_layer, bottlenecks)
    video = gaussian(2, 5, 16, seed=10).requires_grad_()
    audio_out = encoder(video, gaussian(2, 3, 16, seed=11))[1]
    (grad,) = torch.autograd.grad(audio_out.sum(), video, allow_unused=True)
    assert (grad is not None and bool(grad.abs().sum() > 0)) is exchanges


def test_bottleneck_fusion_init_and_errors() -> None:
    torch.manual_seed(0)
    encoder = BottleneckFusionEncoder(encoder_layers(1, 64, 0), encoder_layers(1, 64, 1), 64, 0)
    assert encoder.bottleneck.shape == (1, 4, 64)
    assert 0.017 < encoder.bottleneck.std().item() < 0.023
    assert {name for name, _ in encoder.named_parameters() if not name.startswith(("video_", "audio_"))} == {
        "bottleneck"
    }
    with pytest.raises(ValueError):
        BottleneckFusionEncoder(encoder_layers(2, 16, 0), encoder_layers(1, 16, 1), 16, 0)
    for fusion_layer in (-1, 3):
        with pytest.raises(ValueError):
            BottleneckFusionEncoder(encoder_layers(2, 16, 0), encoder_layers(2, 16, 1), 16, fusion_layer)


def test_bottleneck_fusion_layers_are_not_copied() -> None:
    video_layers, audio_layers = encoder_layers(2, 16, 0), encoder_layers(2, 16, 1)
    encoder = BottleneckFusionEncoder(video_layers, audio_layers, 16, 1)
    assert list(encoder.video_layers) == list(video_layers)
    assert encoder.audio_layers[1] is audio_layers[1]
