"""Text resemblance between products (numpy only): TF-IDF vectors of the known items' descriptions, built at
training time and stored in the model version (resemblance.npz), and the known items nearest to any text.

A product the model never saw (a new code in the feed) is placed by the known items whose descriptions share its
rarest words: "RED HANGING HEART T-LIGHT HOLDER" lands on "WHITE HANGING HEART T-LIGHT HOLDER".
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np

RESEMBLANCE_FILE = "resemblance.npz"
_WORD = re.compile(r"[A-Z0-9]+(?:-[A-Z0-9]+)*")


def terms(text: str) -> list[str]:
    """A text's words for resemblance: upper case, hyphenated words kept whole and also split ("T-LIGHT": T-LIGHT,
    LIGHT), words of one letter and plain numbers left out (sizes and counts say little of what a product is)."""
    out: list[str] = []
    for word in _WORD.findall(text.upper()):
        parts = word.split("-")
        for w in (word, *parts) if len(parts) > 1 else (word,):
            if len(w) > 1 and not w.isdigit():
                out.append(w)
    return out


class TextIndex:
    """Known items' unit TF-IDF vectors stored by term (postings), with the vocabulary and its IDF."""

    def __init__(
        self, vocabulary: list[str], idf: np.ndarray, indptr: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ):
        self.vocabulary = {term: t for t, term in enumerate(vocabulary)}
        self.idf = idf  # float32 per term
        self.indptr = indptr  # int64 terms + 1: term t's postings are rows/weights[indptr[t]:indptr[t + 1]]
        self.rows = rows  # int32 known item rows
        self.weights = weights  # float32 that item's unit-vector weight for the term
        self.n_items = int(rows.max()) + 1 if len(rows) else 0
        # A word no known item has is as rare as the rarest: it counts in the new item's norm, matches nothing.
        self.unseen_idf = float(idf.max()) if len(idf) else 1.0

    @classmethod
    def build(cls, descriptions: list[str]) -> TextIndex:
        """The index of the known items' descriptions (row i = description i)."""
        ids: dict[str, int] = {}
        term_ids: list[int] = []
        owners: list[int] = []
        for i, text in enumerate(descriptions):
            for term in set(terms(text)):
                term_ids.append(ids.setdefault(term, len(ids)))
                owners.append(i)
        vocabulary = sorted(ids)
        remap = np.empty(len(ids), dtype=np.int64)
        remap[[ids[w] for w in vocabulary]] = np.arange(len(ids))
        term = remap[np.asarray(term_ids, dtype=np.int64)]
        owner = np.asarray(owners, dtype=np.int64)
        df = np.bincount(term, minlength=len(vocabulary))
        idf = (np.log((1 + len(descriptions)) / (1 + df)) + 1).astype(np.float32)
        # Binary term frequency (descriptions are short): each item's vector is its terms' IDFs, made unit length.
        weight = idf[term].astype(np.float64)
        norms = np.sqrt(np.bincount(owner, weights=weight**2, minlength=len(descriptions)))
        weight = weight / np.maximum(norms[owner], 1e-12)
        order = np.lexsort((owner, term))
        indptr = np.searchsorted(term[order], np.arange(len(vocabulary) + 1)).astype(np.int64)
        return cls(vocabulary, idf, indptr, owner[order].astype(np.int32), weight[order].astype(np.float32))

    def to_bytes(self) -> bytes:
        """The stored form (RESEMBLANCE_FILE): an .npz of plain arrays, loadable without pickle, the same bytes for
        the same items (no timestamps: a retraining of the same file gives the same artifact)."""
        vocabulary = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        arrays = {
            "vocabulary": np.asarray(vocabulary, dtype=str),
            "idf": self.idf,
            "indptr": self.indptr,
            "rows": self.rows,
            "weights": self.weights,
        }
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                entry = io.BytesIO()
                np.lib.format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), entry.getvalue())
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TextIndex:
        """Inverse of to_bytes."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["vocabulary"].tolist(), z["idf"], z["indptr"], z["rows"], z["weights"])

    def similarity(self, text: str, n_items: int) -> np.ndarray | None:
        """The cosine of text's TF-IDF vector with every known item's (n_items of them), one float per item; None
        when no word of text is in any known item's description (nothing resembles it: decided at no cost)."""
        found = [self.vocabulary.get(term) for term in set(terms(text))]
        ids = [t for t in found if t is not None]
        if not ids:
            return None
        known = np.asarray(ids, dtype=np.int64)
        norm = np.sqrt(
            float((self.idf[known].astype(np.float64) ** 2).sum()) + (len(found) - len(ids)) * self.unseen_idf**2
        )
        starts, stops = self.indptr[known], self.indptr[known + 1]
        lengths = stops - starts
        at = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        weights = self.weights[at] * np.repeat(self.idf[known], lengths) / norm
        return np.bincount(self.rows[at], weights=weights, minlength=n_items)[:n_items]
