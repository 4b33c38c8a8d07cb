"""The chapter 02 demo: hard negatives, the patch-attention model's contracts, the maps, and the recipe."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.attention import demo
from xmodal_ref.data import COLOURS, POSITIONS, SHAPES, VOCAB, ShapesCaptions, make_shapes_captions, tokenize

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def split() -> ShapesCaptions:
    return make_shapes_captions(64, seed=5)


@pytest.fixture(scope="module")
def model() -> demo.PatchAttentionModel:
    torch.manual_seed(0)
    return demo.PatchAttentionModel(len(VOCAB)).eval()


@pytest.fixture(scope="module")
def trained() -> dict:
    return demo.train_patch_attention_model(seed=0, progress=False)


def attribute_words(caption: list[str]) -> tuple[list[str], list[str], list[str]]:
    return (
        [w for w in caption if w in COLOURS],
        [w for w in caption if w in SHAPES],
        [w for w in caption if w in {"top", "bottom", "left", "right"}],
    )


def test_swap_attribute_changes_exactly_that_attribute(split) -> None:
    for which in range(len(demo.ATTRIBUTES)):
        swapped = demo.swap_attribute(split.tokens, split.attributes, which, torch.Generator().manual_seed(which))
        assert swapped.shape == split.tokens.shape
        for row in range(len(split)):
            length = split.lengths[row]
            assert (swapped[row, length:] == 0).all()
            before = attribute_words([VOCAB[t] for t in split.tokens[row, :length]])
            after = attribute_words([VOCAB[t] for t in swapped[row, :length]])
            assert len(after[0]) == len(after[1]) == 1 and " ".join(after[2]) in POSITIONS
            for a in range(len(demo.ATTRIBUTES)):
                assert (before[a] != after[a]) == (a == which), (which, before, after)


def test_candidate_captions_put_the_true_caption_first(split) -> None:
    index = torch.tensor([3, 0, 7])
    tokens, lengths = demo.candidate_captions(split, index, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 4, split.tokens.shape[1]) and lengths.shape == (3, 4)
    assert torch.equal(tokens[:, 0], split.tokens[index])
    assert (lengths == split.lengths[index, None]).all()
    assert not (tokens[:, 1:] == tokens[:, :1]).all(dim=-1).any()  # every negative differs from the truth


def test_candidates_scored_together_equal_one_at_a_time(model, split) -> None:
    index = torch.arange(6)
    tokens, lengths = demo.candidate_captions(split, index, torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = model(split.images[index], tokens, lengths)  # (6, 4)
        alone = [model(split.images[index], tokens[:, c, None], lengths[:, c, None]) for c in range(4)]  # (6, 1) each
    assert together.shape == (6, 4)
    torch.testing.assert_close(together, torch.cat(alone, dim=1))


def test_padding_tokens_do_not_change_the_score(model, split) -> None:
    index = torch.arange(8)
    images, tokens, lengths = split.images[index], split.tokens[index, None], split.lengths[index, None]
    padded = torch.arange(tokens.shape[-1]) >= lengths[..., None]  # (8, 1, L)
    garbage = torch.where(padded, torch.randint(1, len(VOCAB), tokens.shape), tokens)
    with torch.no_grad():
        torch.testing.assert_close(model(images, garbage, lengths), model(images, tokens, lengths))


def test_attention_maps_are_per_word_distributions_over_the_grid(model, split) -> None:
    words, maps = demo.caption_attention_maps(model, split, 4)
    assert words == tokenize(split.captions[4])
    assert maps.shape == (len(words), model.grid, model.grid)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(len(words)))


def test_quadrant_masks_tile_the_grid() -> None:
    masks = demo.quadrant_masks(4)
    assert masks.shape == (len(POSITIONS), 16)
    assert (masks.sum(dim=0) == 1).all() and (masks.sum(dim=1) == 4).all()
    assert masks[POSITIONS.index("top left")].view(4, 4)[:2, :2].all()
    assert masks[POSITIONS.index("bottom right")].view(4, 4)[2:, 2:].all()


def test_plot_shows_the_image_and_one_map_per_word(model, split) -> None:
    words, maps = demo.caption_attention_maps(model, split, 0)
    fig = demo.plot_attention_maps(split.images[0], words, maps)
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(panels) == 1 + len(words)


def test_recipe_learns_the_task_and_attends_to_the_shape(trained) -> None:
    matching, mass = trained["matching"], trained["quadrant_mass"]
    assert matching["accuracy"] > 0.9, matching
    assert min(matching[f"{a}_accuracy"] for a in demo.ATTRIBUTES) > 0.9, matching
    # Colour and shape words look at the shape far more than uniform attention (1/4) would.
    assert mass["colour"] > 0.35 and mass["shape"] > 0.35, mass
    assert all(abs(v - 0.25) < 0.05 for k, v in trained["initial_quadrant_mass"].items() if k != "position_named_half")
    assert trained["model"].training is False


def test_recipe_is_deterministic_under_its_seed() -> None:
    again = demo.train_patch_attention_model(seed=0, epochs=1, batch_size=512, progress=False)
    once_more = demo.train_patch_attention_model(seed=0, epochs=1, batch_size=512, progress=False)
    assert again["losses"] == once_more["losses"]
    assert again["matching"] == once_more["matching"]
