"""GAN features for morphological profiling (Goldsborough et al., 2017) and latent arithmetic.

* **Discriminator features**: the critic's penultimate activations (the last feature map before
  its scoring convolution, flattened) as a cell embedding. A star-shaped critic has one critic
  per protein; a cell's embedding concatenates what every critic sees in it.
* **Measure**: leave-one-out 1-nearest-neighbour protein accuracy (cosine distance) of an
  embedding, compared with raw pixels and with the LIN classifier's features.
* **Latent arithmetic**: an attribute vector is the mean code of group A minus that of group B;
  adding it (times a strength, :func:`napari_biogans.sampling.shift_codes`) to codes moves cells
  along the attribute. ``length_attribute``
  builds "long minus short" from generated cells whose red length is measured.
"""

from __future__ import annotations

import numpy as np
import torch


def load_critic(train_state_path, device="cpu"):
    """The critic of a training run (``train_state.safetensors``), in eval mode."""
    from .. import checkpoints
    from ..models.architectures import build_critic

    tensors, meta = checkpoints.load(train_state_path, kind="train-state")
    critic = build_critic(meta["critic_config"])
    checkpoints.load_module_state(critic, tensors, train_state_path, prefix="D.")
    return critic.to(device).eval(), meta


def critic_features(critic, pairs: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, d) float64 embeddings of uint8 pairs (N, 2, H, W) from a per-pair critic (DCGANCritic)."""
    if not hasattr(critic, "critics"):
        raise ValueError("discriminator features need a per-pair critic (dcgan, separable, star, one-class runs)")
    device = next(critic.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(pairs), batch):
            x = torch.as_tensor(pairs[start : start + batch], dtype=torch.float32, device=device) / 127.5 - 1.0
            # every critic's body without its final scoring convolution
            parts = [d.net[:-1](x).flatten(1) for d in critic.critics]
            out.append(torch.cat(parts, dim=1).double().cpu().numpy())
    return np.concatenate(out)


def loo_1nn_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy with cosine distance: how well an embedding separates proteins."""
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    labels = np.asarray(labels)
    if len(features) < 2:
        raise ValueError("1-NN accuracy needs at least two cells")
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # leave the cell itself out
    return float(np.mean(labels[similarity.argmax(1)] == labels))


# --------------------------------------------------------------------------------------------
# Latent arithmetic


def attribute_vector(codes_a: np.ndarray, codes_b: np.ndarray) -> np.ndarray:
    """Mean code of group A minus mean code of group B: (nz,) float32."""
    codes_a, codes_b = np.asarray(codes_a, np.float64), np.asarray(codes_b, np.float64)
    if len(codes_a) == 0 or len(codes_b) == 0 or codes_a.shape[1:] != codes_b.shape[1:]:
        raise ValueError(f"need two non-empty groups of codes of one size, got {codes_a.shape} and {codes_b.shape}")
    return (codes_a.mean(0) - codes_b.mean(0)).astype(np.float32)


def length_attribute(generator, pool: int = 512, seed: int = 0, quantile: float = 0.25) -> dict:
    """"Long minus short" from ``pool`` generated cells: the red length of each is measured
    (Feret diameter), and the mean code of the longest ``quantile`` minus that of the shortest."""
    from ..data.lin import to_uint8
    from ..sampling import latent_codes, render
    from .interpolation import red_lengths

    z = latent_codes(pool, generator.nz, generator.nz_red, seed)
    lengths = red_lengths(to_uint8(render(generator, z)[:, 0, 0]))
    order = np.argsort(lengths)
    k = max(1, int(pool * quantile))
    short, long = order[:k], order[-k:]
    return {"vector": attribute_vector(z[long], z[short]), "long_px": float(np.median(lengths[long])),
            "short_px": float(np.median(lengths[short])), "pool": pool, "seed": seed}
