"""The encoder model and the shared training pieces, on tiny configs."""

import math

import pytest
import torch

from category_classification.models.encoder import (EmbeddingClassifier, EmbeddingClassifierConfig,
                                                           SelfAttention, apply_rope, rope_cos_sin)
from category_classification.training.loop import LengthBucketBatchSampler, drop_tokens, lr_at, pad_batch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny matrices: on a small shared CPU, thread hand-offs cost far more than the work.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw):
    base = dict(vocab_size=50, num_labels=3, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                ffn_size=64, dropout=0.0, max_drop_path=0.0, classifier_dropout=0.0)
    base.update(kw)
    return EmbeddingClassifierConfig(**base)


def expected_parameters(c: EmbeddingClassifierConfig) -> int:
    h, hd = c.hidden_size, c.hidden_size // c.num_heads
    attn = h * c.num_heads * hd * 2 + h * c.num_kv_heads * hd * 2  # q, o and k, v
    block = attn + 3 * h * c.ffn_size + 2 * h + 2 * h  # swiglu, two norms, two residual scales
    w = c.classifier_hidden or h
    head = h * w + w + w * c.num_labels + c.num_labels
    return c.vocab_size * h + h + c.num_layers * block + h + head


def test_shapes_and_parameter_count():
    cfg = tiny()
    model = EmbeddingClassifier(cfg)
    ids = torch.randint(1, 50, (3, 7))
    out = model(ids, torch.ones_like(ids), labels=torch.tensor([0, 1, 2]), return_embeddings=True)
    assert out["logits"].shape == (3, 3) and out["loss"].dim() == 0
    assert out["pooled_embeddings"].shape == (3, 32) and out["token_embeddings"].shape == (3, 7, 32)
    assert model.num_parameters() == expected_parameters(cfg)


def test_default_config_is_about_80m_with_the_qwen_vocabulary():
    cfg = EmbeddingClassifierConfig(vocab_size=151669, num_labels=6)
    with torch.device("meta"):  # counts without allocating 320 MB
        model = EmbeddingClassifier(cfg)
    assert model.num_parameters() == expected_parameters(cfg) == 80_034_054
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_size) == (10, 384, 6, 2, 1536)


@pytest.mark.parametrize("pooler,head", [("mean", "mlp"), ("first", "residual")])
def test_padding_does_not_change_outputs(pooler, head):
    torch.manual_seed(0)
    model = EmbeddingClassifier(tiny(pooler=pooler, head=head)).eval()
    seqs = [[5, 6, 7, 8, 9], [11, 12]]
    short = model(torch.tensor([seqs[1]]), torch.ones(1, 2, dtype=torch.long), return_embeddings=True)
    ids, mask = pad_batch(seqs, pad_id=0)
    batched = model(ids, mask, return_embeddings=True)
    torch.testing.assert_close(batched["logits"][1], short["logits"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["pooled_embeddings"][1], short["pooled_embeddings"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched["token_embeddings"][1, :2], short["token_embeddings"][0], atol=1e-5,
                               rtol=1e-5)
    # Changing what sits in the padding positions changes nothing either.
    ids2 = ids.clone()
    ids2[1, 2:] = 33
    torch.testing.assert_close(model(ids2, mask)["logits"], batched["logits"], atol=1e-6, rtol=1e-6)


def naive_attention(attn: SelfAttention, x, mask, theta=10000.0):
    """Loops over heads, complex-number RoPE, explicit softmax: an independent reference."""
    b, t, h = x.shape
    nh, nkv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = (x @ attn.q_proj.weight.T).view(b, t, nh, hd)
    k = (x @ attn.k_proj.weight.T).view(b, t, nkv, hd)
    v = (x @ attn.v_proj.weight.T).view(b, t, nkv, hd)

    def rope(z):  # pairs (i, i + hd/2) rotate by angle pos * theta^(-2i/hd)
        half = hd // 2
        zc = torch.complex(z[..., :half].double(), z[..., half:].double())
        freq = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / hd)
        angle = torch.arange(t, dtype=torch.float64)[:, None] * freq[None, :]
        rot = zc * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
        return torch.cat([rot.real, rot.imag], dim=-1).float()

    q, k = rope(q), rope(k)
    out = torch.zeros(b, t, nh, hd)
    for bi in range(b):
        for head in range(nh):
            kvh = head // (nh // nkv)
            scores = q[bi, :, head] @ k[bi, :, kvh].T / math.sqrt(hd)
            scores = scores.masked_fill(~mask[bi].bool()[None, :], float("-inf"))
            out[bi, :, head] = scores.softmax(-1) @ v[bi, :, kvh]
    return out.reshape(b, t, nh * hd) @ attn.o_proj.weight.T


def test_gqa_and_rope_match_naive_reference():
    torch.manual_seed(1)
    cfg = tiny(hidden_size=48, num_heads=6, num_kv_heads=2)
    attn = SelfAttention(cfg).eval()
    x = torch.randn(2, 9, 48)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    cos, sin = rope_cos_sin(9, 8, 10000.0, x.device)
    ours = attn(x, mask.bool()[:, None, None, :], cos, sin)
    torch.testing.assert_close(ours, naive_attention(attn, x, mask), atol=1e-4, rtol=1e-4)


def test_rope_is_relative():
    # q.k after RoPE depends only on the distance between positions.
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    cos, sin = rope_cos_sin(12, 16, 10000.0, "cpu")

    def dot(i, j):
        return (apply_rope(q, cos[i], sin[i]) * apply_rope(k, cos[j], sin[j])).sum()

    torch.testing.assert_close(dot(3, 1), dot(10, 8), atol=1e-5, rtol=1e-5)


def test_loss_falls_on_a_tiny_task():
    torch.manual_seed(0)
    model = EmbeddingClassifier(tiny(label_smoothing=0.1))
    # The class is which of three marker tokens the sequence contains, anywhere.
    ids = torch.randint(10, 50, (48, 8))
    y = torch.arange(48) % 3
    ids[torch.arange(48), torch.randint(0, 8, (48,))] = y + 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(ids, torch.ones_like(ids), labels=y)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert (model.eval()(ids, torch.ones_like(ids))["logits"].argmax(-1) == y).float().mean() > 0.9


def test_focal_and_class_weighted_losses():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    y = torch.tensor([0, 2])
    from category_classification.models.encoder import classification_loss

    plain = classification_loss(logits, y, tiny())
    focal = classification_loss(logits, y, tiny(focal_gamma=2.0))
    assert focal < plain  # focal loss down-weights the easy first example
    weighted = classification_loss(logits, y, tiny(class_weights=[1.0, 1.0, 0.0]))
    torch.testing.assert_close(weighted, torch.nn.functional.cross_entropy(logits[:1], y[:1]))


def test_drop_path_rises_over_depth_and_config_roundtrip():
    cfg = tiny(num_layers=3, max_drop_path=0.1)
    model = EmbeddingClassifier(cfg)
    assert [b.drop_path.p for b in model.blocks] == pytest.approx([0.0, 0.05, 0.1])
    assert EmbeddingClassifierConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        tiny(num_kv_heads=3)


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, "cosine", warmup_steps=10, min_scale=0.1) == pytest.approx(0.1)
    assert lr_at(99, 100, 1.0, "exponential", min_scale=0.01) == pytest.approx(0.01)
    assert lr_at(50, 100, 2.0, "none") == 2.0
    values = [lr_at(s, 100, 1.0, "cosine", 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_length_bucket_sampler_covers_and_splits_across_ranks():
    lengths = [(i * 7) % 23 + 1 for i in range(101)]
    one = LengthBucketBatchSampler(lengths, 8, seed=3, bucket_batches=4)
    one.set_epoch(1)
    seen = sorted(i for b in one for i in b)
    assert seen == list(range(101))
    assert list(one) == list(one)  # fixed by seed and epoch
    one.set_epoch(2)
    assert list(one) != list(iter(LengthBucketBatchSampler(lengths, 8, seed=3, bucket_batches=4)))
    r0 = LengthBucketBatchSampler(lengths, 8, seed=3, rank=0, world_size=2)
    r1 = LengthBucketBatchSampler(lengths, 8, seed=3, rank=1, world_size=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == len(r0)
    assert not set(i for b in b0 for i in b) & set(i for b in b1 for i in b)


def test_token_dropout_keeps_order_and_at_least_one_token():
    seqs = [list(range(10, 40)), [7], [1, 2]]
    assert drop_tokens(seqs, 0.0) is seqs
    torch.manual_seed(0)
    a = drop_tokens(seqs, 0.5)
    torch.manual_seed(0)
    assert drop_tokens(seqs, 0.5) == a  # the global generator decides, so a restored RNG state repeats it
    assert all(len(s) >= 1 for s in a) and 5 < len(a[0]) < 25
    assert a[0] == sorted(a[0]) and set(a[0]) <= set(seqs[0])
    assert drop_tokens([[3, 4]], 0.999999) in ([[3]], [[4]])
