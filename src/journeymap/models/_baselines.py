"""Baselines that published comparisons find hard to beat, as the literature defines them.

* ``Popularity`` (``pop``): training occurrences of each item; the same list for everyone.
* ``Markov`` (``markov``): first-order chain, P(next | last item) from transition counts in
  training sessions; when the last item has no observed successor, popularity.
* ``SessionKNN`` (``sknn``): V-SKNN of Ludewig & Jannach (2018), "Evaluation of session-based
  recommendation algorithms", as in their session-rec code (``vsknn.py``): the prefix is a vector
  whose item weights fall linearly with distance from the end (pos / length, 1 for the last
  click); candidate neighbours are the ``sample_size`` most recent training sessions sharing an
  item with it; similarity to a (binary) past session is cosine; the ``neighbors`` most similar
  sessions vote, an item's score being the sum of the similarities of the neighbours that hold it.
* ``ItemKNN`` (``iknn``): the item-kNN baseline of Hidasi et al. (2016, GRU4Rec): the cosine of
  two items' session vectors with support regularization, s_ij = |S_i & S_j| /
  ((|S_i| + lambda)^alpha (|S_j| + lambda)^(1 - alpha)); the next item is scored by similarity to the
  last item, each item keeping its ``neighbors`` most similar.

All are vectorized with scipy.sparse; batches of prefixes are scored with a few sparse products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from journeymap.exceptions import JourneymapError
from journeymap.models._base import SequenceModel
from journeymap.models._data import Encoded


def _session_matrix(sessions: Encoded, n_items: int) -> sp.csr_matrix:
    """Binary (session x item) matrix: 1 where the session holds the item (known items only)."""
    known = sessions.items >= 0
    matrix = sp.csr_matrix((np.ones(int(known.sum())), (sessions.rows()[known], sessions.items[known])),
                           shape=(len(sessions), n_items))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _decayed_prefixes(prefixes: Encoded, n_items: int) -> sp.csr_matrix:
    """V-SKNN's prefix vectors: weight pos / length per known item, 1 for the last click: (n, n_items).

    A repeated item keeps the weight of its last (most recent) occurrence.
    """
    rows, positions, items = prefixes.rows(), prefixes.positions(), prefixes.items
    known = items >= 0
    rows, positions, items = rows[known], positions[known], items[known]
    order = np.lexsort((positions, items, rows))
    rows, positions, items = rows[order], positions[order], items[order]
    latest = np.r_[(rows[1:] != rows[:-1]) | (items[1:] != items[:-1]), True] if len(rows) else np.zeros(0, bool)
    weight = positions[latest] / prefixes.lengths[rows[latest]]
    return sp.csr_matrix((weight, (rows[latest], items[latest])), shape=(len(prefixes), n_items))


def _first_per_row(rows: np.ndarray, limit: int) -> np.ndarray:
    """For ``rows`` sorted ascending, a mask keeping the first ``limit`` entries of each row."""
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    lengths = np.diff(np.r_[starts, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(starts, lengths)
    return rank < limit


def _positive_int(model: SequenceModel, name: str, minimum: int = 1) -> None:
    value = getattr(model, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise JourneymapError(f"{type(model).__name__}'s '{name}' must be a whole number >= {minimum}. Got {value!r}.")


class Popularity(SequenceModel):
    """The most frequent training items, the same list for every prefix."""

    name = "pop"
    _state = ("popularity_",)

    def __init__(self) -> None:
        pass

    def _fit(self, sessions: Encoded, event_types: Sequence[Sequence[str]] | None) -> None:
        counts = self.vocab_.counts.astype(np.float64)
        self.popularity_ = counts / counts.sum()  # (n_items,) share of training occurrences

    def _score(self, prefixes: Encoded) -> np.ndarray:
        return np.repeat(self.popularity_[None, :], len(prefixes), axis=0)


class Markov(SequenceModel):
    """First-order Markov chain on items: P(next | last item), backing off to popularity."""

    name = "markov"
    _state = ("transitions_", "popularity_")

    def __init__(self) -> None:
        pass

    def _fit(self, sessions: Encoded, event_types: Sequence[Sequence[str]] | None) -> None:
        m = len(self.vocab_)
        items, rows = sessions.items, sessions.rows()
        follows = rows[1:] == rows[:-1]  # consecutive clicks of one session
        source, target = items[:-1][follows], items[1:][follows]
        counts = sp.csr_matrix((np.ones(len(source)), (source, target)), shape=(m, m))
        counts.sum_duplicates()
        totals = np.asarray(counts.sum(axis=1)).ravel()
        self.transitions_ = sp.diags(np.divide(1.0, totals, out=np.zeros(m), where=totals > 0)) @ counts
        self.transitions_ = sp.csr_matrix(self.transitions_)  # (n_items, n_items) row-stochastic where seen
        popularity = self.vocab_.counts.astype(np.float64)
        self.popularity_ = popularity / popularity.sum()

    def _score(self, prefixes: Encoded) -> np.ndarray:
        last = prefixes.last()
        has_successor = np.zeros(len(last), dtype=bool)
        known = last >= 0
        has_successor[known] = np.diff(self.transitions_.indptr)[last[known]] > 0
        out = np.repeat(self.popularity_[None, :], len(prefixes), axis=0)
        out[has_successor] = self.transitions_[last[has_successor]].toarray()
        return out


class SessionKNN(SequenceModel):
    """V-SKNN: the prefix's nearest past sessions vote for their items (Ludewig & Jannach 2018).

    ``neighbors``: how many similar sessions vote (session-rec's ``k``).
    ``sample_size``: candidates are this many most recent sessions sharing an item (0: all).
    ``similarity``: ``"cosine"`` (decayed prefix vector against the binary session vector), or
    ``"vec"``, session-rec's ``vsknn`` variant: the dot product over the prefix's distinct items,
    which favours long neighbour sessions.
    ``score_decay``: ``"none"`` (an item's score is the sum of its voters' similarities), or
    ``"div"`` as in session-rec's V-SKNN: each vote is divided by how many clicks back the most
    recent prefix item the neighbour shares lies (1 for the last click).
    Sessions must be given to ``fit`` oldest first: recency is their order.
    """

    name = "sknn"
    _state = ("sessions_",)

    def __init__(self, neighbors: int = 100, sample_size: int = 500, similarity: str = "cosine",
                 score_decay: str = "none") -> None:
        self.neighbors = neighbors
        self.sample_size = sample_size
        self.similarity = similarity
        self.score_decay = score_decay

    def _check_params(self) -> None:
        _positive_int(self, "neighbors")
        _positive_int(self, "sample_size", minimum=0)
        if self.similarity not in ("cosine", "vec"):
            raise JourneymapError(f"SessionKNN's similarity must be 'cosine' or 'vec'. Got {self.similarity!r}.")
        if self.score_decay not in ("none", "div"):
            raise JourneymapError(f"SessionKNN's score_decay must be 'none' or 'div'. Got {self.score_decay!r}.")

    def _fit(self, sessions: Encoded, event_types: Sequence[Sequence[str]] | None) -> None:
        self.sessions_ = _session_matrix(sessions, len(self.vocab_))  # (n_sessions, n_items), oldest first

    def _score(self, prefixes: Encoded) -> np.ndarray:
        self._check_params()
        n, m = len(prefixes), len(self.vocab_)
        sessions = self.sessions_
        weights = _decayed_prefixes(prefixes, m)  # (n, n_items)
        # Candidates: every past session sharing an item, most recent (highest row) last in each row.
        dots = sp.csr_matrix(weights @ sessions.T)  # (n, n_sessions) dot products
        dots.sort_indices()
        per_row = np.diff(dots.indptr)
        pair_row = np.repeat(np.arange(n), per_row)
        pair_session, dot = dots.indices, dots.data
        if self.sample_size:
            rank_from_end = np.repeat(dots.indptr[1:], per_row) - np.arange(len(dot))  # 1 = most recent
            recent = rank_from_end <= self.sample_size
            pair_row, pair_session, dot = pair_row[recent], pair_session[recent], dot[recent]
        if self.similarity == "cosine":
            prefix_norm = np.sqrt(np.asarray(weights.multiply(weights).sum(axis=1)).ravel())
            session_norm = np.sqrt(np.diff(sessions.indptr))
            similarity = dot / (prefix_norm[pair_row] * session_norm[pair_session])
        else:  # the prefix's distinct items divide every dot product alike: only the scale changes
            similarity = dot / np.diff(weights.indptr)[pair_row]
        # The most similar neighbours per prefix; equal similarity goes to the more recent session.
        order = np.lexsort((-pair_session, -similarity, pair_row))
        pair_row, pair_session, similarity = pair_row[order], pair_session[order], similarity[order]
        top = _first_per_row(pair_row, self.neighbors)
        pair_row, pair_session, similarity = pair_row[top], pair_session[top], similarity[top]
        if self.score_decay == "div":
            similarity = similarity / self._steps_back(weights, prefixes.lengths, pair_row, pair_session)
        votes = sp.csr_matrix((similarity, (pair_row, pair_session)), shape=(n, sessions.shape[0]))
        return (votes @ sessions).toarray()  # (n, n_items)

    def _steps_back(self, weights: sp.csr_matrix, lengths: np.ndarray, pair_row: np.ndarray,
                    pair_session: np.ndarray) -> np.ndarray:
        """For each (prefix, neighbour) pair, how many clicks back their most recent shared item is."""
        per_prefix = np.diff(weights.indptr)
        counts = per_prefix[pair_row]
        total = int(counts.sum())
        offsets = np.repeat(weights.indptr[pair_row] - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(total)
        pair = np.repeat(np.arange(len(pair_row)), counts)
        item, weight = weights.indices[offsets], weights.data[offsets]
        shared = np.asarray(self.sessions_[pair_session[pair], item]).ravel() > 0
        length = lengths[pair_row[pair]]
        steps = np.rint(length - weight * length + 1)  # weight = pos / length
        out = np.full(len(pair_row), np.inf)
        np.minimum.at(out, pair[shared], steps[shared])
        return out


class ItemKNN(SequenceModel):
    """Item-kNN (Hidasi et al. 2016): items similar to the last one, by session co-occurrence cosine.

    ``neighbors``: similar items kept per item (the rest score 0). ``regularization`` (lambda)
    discounts rare items' chance co-occurrences; ``alpha`` 0.5 gives cosine, 1.0 confidence.
    """

    name = "iknn"
    _state = ("similarities_",)

    def __init__(self, neighbors: int = 100, regularization: float = 20.0, alpha: float = 0.5) -> None:
        self.neighbors = neighbors
        self.regularization = regularization
        self.alpha = alpha

    def _check_params(self) -> None:
        _positive_int(self, "neighbors")
        if not isinstance(self.regularization, (int, float)) or self.regularization < 0:
            raise JourneymapError(f"ItemKNN's regularization must be a number >= 0. Got {self.regularization!r}.")
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise JourneymapError(f"ItemKNN's alpha must be between 0 and 1. Got {self.alpha!r}.")

    def _fit(self, sessions: Encoded, event_types: Sequence[Sequence[str]] | None) -> None:
        m = len(self.vocab_)
        binary = _session_matrix(sessions, m)
        support = np.asarray(binary.sum(axis=0)).ravel()  # sessions holding each item
        together = sp.coo_matrix(binary.T @ binary)  # (n_items, n_items) sessions holding both
        off_diagonal = together.row != together.col
        row, col, count = together.row[off_diagonal], together.col[off_diagonal], together.data[off_diagonal]
        lam, alpha = float(self.regularization), float(self.alpha)
        norm = np.power(support[row] + lam, alpha) * np.power(support[col] + lam, 1.0 - alpha)
        similarity = count / np.where(norm > 0, norm, 1.0)
        order = np.lexsort((col, -similarity, row))
        row, col, similarity = row[order], col[order], similarity[order]
        top = _first_per_row(row, self.neighbors)
        self.similarities_ = sp.csr_matrix((similarity[top], (row[top], col[top])), shape=(m, m))

    def _score(self, prefixes: Encoded) -> np.ndarray:
        last = prefixes.last()
        out = np.zeros((len(prefixes), len(self.vocab_)))
        known = last >= 0
        out[known] = self.similarities_[last[known]].toarray()
        return out
