"""Metric maths (issue 7): FID, KID, precision/recall, density/coverage, text metrics.

Pure numpy/sacrebleu: no database, no model."""

from __future__ import annotations

import numpy as np
import pytest

from genloom.errors import BadInput
from genloom.evaluation import image_metrics as im
from genloom.evaluation import text_metrics as tm


def _gauss(n, d=8, seed=0, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# --------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    x = _gauss(500)
    assert im.fid(x, x) == pytest.approx(0.0, abs=1e-6)


def test_fid_grows_with_added_noise():
    x = _gauss(2000, seed=1)
    rng = np.random.default_rng(2)
    values = [im.fid(x, x + rng.normal(scale=s, size=x.shape)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert values[0] < 0.1
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances: ‖μ1−μ2‖² + Σ (σ1 − σ2)² per dimension (variances σ²).
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    v1, v2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    expected = 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert im.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_negative_fid_is_an_error_not_zero():
    # Covariances that are not positive semi-definite give a negative "distance": a numerical
    # failure that must be reported, never clamped to a perfect score of 0.
    with pytest.raises(BadInput, match="FID came out negative"):
        im.frechet_distance(np.zeros(3), -np.eye(3), np.zeros(3), -np.eye(3))


def test_fid_with_fewer_samples_than_dimensions_still_finite():
    x, y = _gauss(10, d=32, seed=3), _gauss(10, d=32, seed=4)
    assert np.isfinite(im.fid(x, y))


# --------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_the_definition():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = im.mmd2_unbiased(im.polynomial_kernel(x, x), im.polynomial_kernel(x, y), im.polynomial_kernel(y, y))
    assert got == pytest.approx(xx + yy - 2 * xy, rel=1e-10)


def test_kid_is_unbiased_on_equal_distributions_and_positive_when_they_differ():
    a, b = _gauss(400, seed=6), _gauss(400, seed=7)
    mean, std = im.kid(a, b, subsets=200, subset_size=100)
    # Unbiased: centred on 0 (a biased estimator would sit clearly above it).
    assert abs(mean) < 3 * std / np.sqrt(200) + 1e-3
    shifted_mean, _ = im.kid(a, _gauss(400, seed=8, shift=0.5), subsets=50, subset_size=100)
    assert shifted_mean > 20 * max(abs(mean), 1e-4)


# --------------------------------------------------------------------------- precision/recall/density/coverage


def test_manifold_metrics_reproduce_a_hand_checked_example():
    # 1-D, k = 1. Real radii: 1, 1, 1, 1, 3 (the point 6 is 3 from its neighbour 3).
    # Fake radii (k = 1): 1.7, 1.7, 1, 1.
    real = np.array([[0.0], [1.0], [2.0], [3.0], [6.0]])
    fake = np.array([[0.5], [2.2], [10.0], [11.0]])
    m = im.manifold_metrics(real, fake, pr_k=1, dc_k=1)
    # precision: 0.5 and 2.2 fall in real balls; 10 and 11 do not (10 is 4 from 6, radius 3) → 2/4.
    assert m.precision == pytest.approx(0.5)
    # recall: 0, 1, 2, 3 lie within 1.7 of a fake point; 6 does not → 4/5.
    assert m.recall == pytest.approx(0.8)
    # density: 0.5 is in the balls of 0 and 1; 2.2 in those of 2 and 3 → (2+2+0+0) / (k·4) = 1.
    assert m.density == pytest.approx(1.0)
    # coverage: every real ball but 6's holds a fake point → 4/5.
    assert m.coverage == pytest.approx(0.8)


def test_manifold_metrics_identical_sets_and_disjoint_sets():
    x = _gauss(300, seed=9)
    same = im.manifold_metrics(x, x + 1e-9)
    assert same.precision == 1.0 and same.recall == 1.0 and same.coverage == 1.0
    far = im.manifold_metrics(x, x + 100.0)
    assert far.precision == 0.0 and far.recall == 0.0 and far.density == 0.0 and far.coverage == 0.0


def test_knn_radii_blocks_agree_with_brute_force(monkeypatch):
    x = _gauss(50, d=3, seed=10)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    expected = np.sort(d, axis=1)[:, 3]  # k = 3 others (index 0 is the point itself)
    monkeypatch.setattr(im, "_BLOCK", 7)
    assert np.allclose(im.knn_radii(x, 3), expected)


def test_fewer_samples_than_k_plus_one_is_a_one_line_error():
    with pytest.raises(BadInput, match="at least 6 samples"):
        im.manifold_metrics(_gauss(5), _gauss(50))


def test_label_metrics():
    shares = im.label_distribution([0, 0, 1, 1, 1, 3], 4)
    assert shares.tolist() == pytest.approx([2 / 6, 3 / 6, 0, 1 / 6])
    real = np.full(4, 0.25)
    assert im.mode_coverage(shares, real) == 0.75  # class 2 never drawn
    assert im.label_tv_distance(shares, real) == pytest.approx(0.5 * (1 / 12 + 3 / 12 + 3 / 12 + 1 / 12))
    assert im.conditional_accuracy([1, 2, 3, 3], [1, 2, 3, 4]) == 0.75


# --------------------------------------------------------------------------- text


def test_sacrebleu_documented_example():
    # The example from sacrebleu's README (BLEU = 48.53, chrF2 = 59.73).
    refs = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert tm.bleu(hyps, refs) == pytest.approx(48.53, abs=0.01)
    assert tm.chrf(hyps, refs) == pytest.approx(59.73, abs=0.01)


def test_bleu_needs_one_reference_per_hypothesis():
    with pytest.raises(BadInput, match="2 hypotheses but 1 references"):
        tm.bleu(["a", "b"], ["a"])


def test_perplexity_and_bits_per_character():
    assert tm.perplexity(10 * np.log(4), 10) == pytest.approx(4.0)
    assert tm.bits_per_character(100 * np.log(2), 50) == pytest.approx(2.0)


def _tiny_gpt(text: str, block_size: int = 16):
    import torch

    from genloom.architectures import text_tokenizer
    from genloom.architectures.gpt import GPT, GPTConfig

    tok = text_tokenizer.train_tokenizer(text, "char")
    torch.manual_seed(0)
    net = GPT(GPTConfig(block_size=block_size, vocab_size=tok.get_vocab_size(), n_layer=1, n_head=2, n_embd=16))
    return net, tok


def test_causal_lm_nll_of_a_uniform_model_is_log_vocab_per_token():
    import torch

    from genloom.evaluation.jobs import causal_lm_nll

    text = "abcab cab bca " * 5  # 70 characters: four full windows of 16 and a partial one
    net, tok = _tiny_gpt(text)
    with torch.no_grad():
        net.lm_head.weight.zero_()  # every logit 0: each of the V tokens has probability 1/V
    nll, tokens = causal_lm_nll(net, tok, text, "cpu")
    vocab = tok.get_vocab_size()  # 4 characters + eos + unk
    assert vocab == 6 and tokens == len(text) - 1
    assert nll == pytest.approx(tokens * np.log(vocab), rel=1e-6)
    assert tm.perplexity(nll, tokens) == pytest.approx(6.0, rel=1e-6)


def test_causal_lm_nll_matches_a_hand_computed_sum_of_log_probabilities():
    import torch

    from genloom.evaluation.jobs import causal_lm_nll

    text = "to be or not to be"  # 18 characters, within one window of 32
    net, tok = _tiny_gpt(text, block_size=32)
    ids = torch.tensor(tok.encode(text, add_special_tokens=False).ids)
    net.eval()
    with torch.no_grad():
        logits, _ = net(ids[None, :-1], ids[None, 1:])
        log_probs = torch.log_softmax(logits[0].double(), dim=-1)
    by_hand = -sum(float(log_probs[i, ids[i + 1]]) for i in range(len(ids) - 1))
    nll, tokens = causal_lm_nll(net, tok, text, "cpu")
    assert tokens == 17
    assert nll == pytest.approx(by_hand, rel=1e-5)
    assert tm.perplexity(nll, tokens) == pytest.approx(np.exp(by_hand / 17), rel=1e-5)


def test_distinct_n():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c → 3 unique / 7; bigrams: ab ba ab ab bc → 3 unique / 5.
    assert tm.distinct_n(texts, 1) == pytest.approx(3 / 7)
    assert tm.distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert tm.distinct_n(["one"], 2) == 0.0


def test_memorisation_rate_counts_verbatim_spans_only():
    train = ["To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"]
    index = tm.SpanIndex(train, span=20)
    copied = train[0][10:40]  # 30 chars → 11 windows of 20, all in the training text
    novel = "x" * 30  # 11 windows, none memorised
    result = tm.memorisation_rate([copied, novel], index)
    assert (result.windows, result.memorised) == (22, 11)
    assert result.rate == 0.5
    # A window across two training items is not a memorised span.
    index2 = tm.SpanIndex(["abcdefghij", "klmnopqrst"], span=6)
    assert "ghijkl" not in index2 and "efghij" in index2
