"""Each covered architecture against mlx-lm's own model class on the same weights (an oracle we did not write)."""

import mlx.core as mx
import pytest
from mlx_lm.utils import load_model as mlx_lm_load_model
from tiny_models import VARIANTS, write_tiny_folder

from model.loading.config import config_from_hf
from model.loading.weights import apply_weights
from model.network.transformer import Transformer


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_mlx_lm(tmp_path, variant):
    folder = tmp_path / variant
    config = write_tiny_folder(folder, variant)
    reference, _ = mlx_lm_load_model(folder)

    ours = Transformer(config_from_hf(config))
    apply_weights(ours, mx.load(str(folder / "model.safetensors")), 64, "float32")

    # Long enough that Llama 3's rescaled low frequencies matter.
    tokens = mx.array([[(7 * i + 3) % config["vocab_size"] for i in range(200)]])
    expected = reference(tokens)
    got = ours(tokens)
    assert got.shape == expected.shape
    assert mx.abs(got - expected).max().item() < 1e-4


def test_rope_scaling_changes_the_result(tmp_path):
    """The Llama 3 rule is really applied (the comparison above would pass vacuously otherwise)."""
    config = write_tiny_folder(tmp_path / "l3", "llama3")
    plain = dict(config, rope_scaling=None)
    a, b = Transformer(config_from_hf(config)), Transformer(config_from_hf(plain))
    weights = mx.load(str(tmp_path / "l3" / "model.safetensors"))
    apply_weights(a, dict(weights), 64, "float32")
    apply_weights(b, dict(weights), 64, "float32")
    tokens = mx.array([list(range(90))])
    assert mx.abs(a(tokens) - b(tokens)).max().item() > 1e-3
