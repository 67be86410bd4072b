"""A model's hyperparameters (TrainingParams), which every stage of the recipe reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from recommender.training import holdout, reranker


@dataclass(frozen=True)
class TrainingParams:
    """The hyperparameters of a model, chosen on a validation split (README, Quality); stored in its manifest."""

    # Rows of the matrix: one per basket, plus one per returning customer (their whole history, capped).
    customer_min_baskets: int = 2
    customer_max_items: int = 500  # bounds the co-purchase pairs a wholesale customer adds
    # Item-item table: EASE's regression restricted to each item's top-K neighbours; re-ranks the candidates.
    neighbors: int = 100
    ridge_share: float = 0.2  # lambda = ridge_share * mean item count: scale-free across datasets
    # Annoy over SVD item embeddings: candidate retrieval.
    factors: int = 128
    popularity_damping: float = 0.5  # item columns scaled by count^-damping before the SVD
    svd_iterations: int = 4
    n_trees: int = 20
    # Query time: the candidates are each basket item's nearest items in the Annoy index.
    candidates_per_item: int = 50
    search_k_per_item: int = 1000
    seed: int = 0
    # The most recent baskets kept out of training to measure the model (None: train on everything, unmeasured).
    holdout: holdout.HoldoutPolicy | None = field(default_factory=holdout.HoldoutPolicy)
    # The learned re-ranker of the first stage's best candidates (training/reranker.py). Off unless asked for
    # (make train RERANK=1; make evaluate always trains it): it lifts HR@10 by about 5% on Online Retail but costs
    # about ten times the first stage's CPU per answer (0.5 ms), and 19 times its training time (docs/quality.md).
    rerank: reranker.RerankParams = field(default_factory=lambda: reranker.RerankParams(enabled=False))
