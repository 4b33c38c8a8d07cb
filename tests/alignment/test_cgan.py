"""The chapter 04 conditional GAN: shapes, conditioning, the judge, the metrics and a short deterministic run."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

from xmodal_ref.alignment import cgan
from xmodal_ref.data import make_shapes_captions

pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def judge() -> cgan.AttributeClassifier:
    return cgan.train_attribute_classifier(seed=0)


@pytest.fixture(scope="module")
def short_run() -> dict:
    return cgan.train_conditional_gan(seed=0, steps=12, progress=False, eval_every=6)


class Oracle(cgan.AttributeClassifier):
    """A judge that reads the attributes off a lookup of known images: right on those, by construction."""

    def __init__(self, images: torch.Tensor, attributes: torch.Tensor) -> None:
        super().__init__()
        self.images, self.attributes = images, attributes

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        distances = torch.cdist(images.flatten(1), self.images.flatten(1))  # (N, K)
        return self.attributes[distances.argmin(dim=1)]


class Renderer(cgan.Generator):
    """A "generator" that returns one fixed real render per condition and ignores the noise."""

    def __init__(self, noise_scale: float = 0.0) -> None:
        super().__init__()
        renders = make_shapes_captions(4000, seed=7)
        conditions = cgan.all_conditions()
        first = [int((renders.attributes == c).all(dim=-1).nonzero()[0]) for c in conditions]
        self.table = renders.images[first]  # (96, 3, 32, 32), row r renders condition r
        self.noise_scale = noise_scale

    def forward(self, noise: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor(cgan.ATTRIBUTE_SIZES)
        row = attributes[:, 0] * sizes[1] * sizes[2] + attributes[:, 1] * sizes[2] + attributes[:, 2]  # (B,)
        return self.table[row] + self.noise_scale * noise[:, :1, None, None]


def test_all_conditions_are_the_96_distinct_combinations_in_lexicographic_order() -> None:
    conditions = cgan.all_conditions()
    assert conditions.shape == (96, 3)
    assert len({tuple(row) for row in conditions.tolist()}) == 96
    assert conditions[0].tolist() == [0, 0, 0] and conditions[-1].tolist() == [5, 3, 3]
    assert conditions[1].tolist() == [0, 0, 1]  # the position varies fastest, as Renderer assumes


def test_generator_and_discriminator_shapes_and_ranges() -> None:
    torch.manual_seed(0)
    generator, discriminator = cgan.Generator(), cgan.Discriminator()
    conditions = cgan.all_conditions()[:5]
    images = generator(torch.randn(5, cgan.NOISE_DIM), conditions)
    assert images.shape == (5, 3, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    logits, classes = discriminator(images, conditions)
    assert logits.shape == (5,) and classes.shape == (5, sum(cgan.ATTRIBUTE_SIZES))


def test_the_discriminator_depends_on_the_condition_through_the_projection() -> None:
    torch.manual_seed(0)
    discriminator = cgan.Discriminator()
    images = torch.rand(4, 3, 32, 32)
    conditions = cgan.all_conditions()[:4]
    other = conditions.clone()
    other[:, 1] = (other[:, 1] + 1) % cgan.ATTRIBUTE_SIZES[1]  # another shape
    same, changed = discriminator(images, conditions)[0], discriminator(images, other)[0]
    assert not torch.allclose(same, changed)
    with torch.no_grad():
        for table in discriminator.projection.tables:
            table.weight.zero_()
    assert torch.equal(discriminator(images, conditions)[0], discriminator(images, other)[0])


def test_sampling_is_deterministic_under_the_seed_and_varies_with_it() -> None:
    torch.manual_seed(0)
    generator = cgan.Generator()
    conditions = cgan.all_conditions()[:8]
    first = generator.sample(conditions, torch.Generator().manual_seed(1))
    again = generator.sample(conditions, torch.Generator().manual_seed(1))
    other = generator.sample(conditions, torch.Generator().manual_seed(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_per_attribute_accuracy_counts_each_column_and_all_three() -> None:
    truth = torch.tensor([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]])
    predicted = torch.tensor([[0, 0, 0], [1, 0, 1], [2, 2, 0], [0, 3, 3]])
    accuracy = cgan.per_attribute_accuracy(predicted, truth)
    assert accuracy == pytest.approx({"colour": 0.75, "shape": 0.75, "position": 0.75, "all": 0.25})


def test_the_judge_reads_real_renders(judge: cgan.AttributeClassifier) -> None:
    assert set(judge.held_out_accuracy) == {"colour", "shape", "position", "all"}
    assert judge.held_out_accuracy["colour"] >= 0.99
    assert judge.held_out_accuracy["position"] >= 0.99
    assert judge.held_out_accuracy["all"] >= 0.97


def test_attribute_accuracy_is_perfect_for_real_renders_and_drops_for_wrong_ones() -> None:
    renderer = Renderer()
    oracle = Oracle(renderer.table, cgan.all_conditions())
    assert cgan.attribute_accuracy(renderer, oracle)["all"] == 1.0

    class WrongShape(Renderer):
        def forward(self, noise: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
            shifted = attributes.clone()
            shifted[:, 1] = (shifted[:, 1] + 1) % cgan.ATTRIBUTE_SIZES[1]
            return super().forward(noise, shifted)

    accuracy = cgan.attribute_accuracy(WrongShape(), oracle)
    assert accuracy["shape"] == 0.0 and accuracy["colour"] == 1.0 and accuracy["position"] == 1.0


def test_sample_diversity_is_zero_for_a_generator_that_ignores_its_noise() -> None:
    real = make_shapes_captions(3000, seed=3)
    collapsed = cgan.sample_diversity(Renderer(), real)
    assert collapsed["generated"] == 0.0 and collapsed["ratio"] == 0.0
    assert collapsed["real"] > 1.0
    varied = cgan.sample_diversity(Renderer(noise_scale=0.5), real)
    assert varied["ratio"] > 0.0


def test_mean_pairwise_distance_of_a_known_group() -> None:
    group = torch.zeros(3, 1, 1, 2)
    group[1, 0, 0, 0] = 3.0
    group[2, 0, 0, 1] = 4.0  # distances 3, 4 and 5
    assert cgan.mean_pairwise_distance(group) == pytest.approx(4.0)


def test_training_logs_every_step_and_is_deterministic(short_run: dict) -> None:
    assert short_run["steps"] == 12
    assert len(short_run["losses"]["discriminator"]) == len(short_run["losses"]["generator"]) == 12
    assert all(torch.isfinite(torch.tensor(short_run["losses"]["generator"])))
    assert short_run["curve"] == [] and short_run["accuracy"] is None  # no judge, no curve
    again = cgan.train_conditional_gan(seed=0, steps=12, progress=False)
    assert again["losses"] == short_run["losses"]


def test_the_curve_is_measured_every_eval_every_steps_and_at_the_end(judge: cgan.AttributeClassifier) -> None:
    result = cgan.train_conditional_gan(seed=0, steps=10, progress=False, classifier=judge, eval_every=4)
    assert [point["step"] for point in result["curve"]] == [4, 8, 10]
    assert result["accuracy"] == result["curve"][-1]
    assert all(0.0 <= point["all"] <= point["shape"] <= 1.0 for point in result["curve"])
    seconds = [point["seconds"] for point in result["curve"]]
    assert seconds == sorted(seconds) and seconds[-1] <= result["seconds"] + 1e-9


def test_plots_return_figures(short_run: dict, judge: cgan.AttributeClassifier) -> None:
    grid = cgan.plot_samples_grid(short_run["generator"], position=0, samples_per_cell=2, classifier=judge)
    assert isinstance(grid, Figure)
    assert len(grid.axes) == cgan.ATTRIBUTE_SIZES[0] * cgan.ATTRIBUTE_SIZES[1] * 2
    result = {"curve": [{"step": 1, "seconds": 0.5, "colour": 0.5, "shape": 0.2, "position": 0.9, "all": 0.1}]}
    assert isinstance(cgan.plot_accuracy_curve(result), Figure)
