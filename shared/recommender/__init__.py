"""Complementary-products recommender: what to offer next for the basket a shopper holds."""
