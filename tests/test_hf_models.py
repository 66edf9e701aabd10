"""transformers models built on the meta device and materialized with no rules.

Each model's own ``init_weights()`` runs under the redirect; the result is
compared with the same model initialized by transformers itself (built on
the CPU, torch's generator): parameter statistics, constants, buffers, ties
and the spread of a forward pass. Small configs (hidden 64, 2 layers).
"""

import math

import pytest
import torch

import fastinit.torch as ft

tr = pytest.importorskip("transformers")
tr.logging.set_verbosity_error()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

VOCAB = 256


def configs():
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64)
    return {
        "llama": (tr.LlamaForCausalLM,
                  tr.LlamaConfig(**common, num_key_value_heads=2, tie_word_embeddings=True)),
        "gemma": (tr.GemmaForCausalLM,
                  tr.GemmaConfig(**common, num_key_value_heads=2, head_dim=16)),
        "gpt2": (tr.GPT2LMHeadModel,
                 tr.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                               bos_token_id=0, eos_token_id=0)),
        "bert": (tr.BertModel, tr.BertConfig(**common)),
        "vit": (tr.ViTModel, tr.ViTConfig(hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=128,
                                          image_size=32, patch_size=8)),
        "resnet": (tr.ResNetForImageClassification,
                   tr.ResNetConfig(embedding_size=64, hidden_sizes=[64, 128], depths=[1, 1],
                                   num_labels=100, layer_type="basic")),
    }


MODELS = list(configs())


def reference(name, torch_seed=0):
    cls, cfg = configs()[name]
    torch.manual_seed(torch_seed)
    return cls(cfg)


def ours(name, seed=0, torch_seed=0, **kw):
    cls, cfg = configs()[name]
    with torch.device("meta"):
        m = cls(cfg)
    assert all(p.is_meta for p in m.parameters())
    torch.manual_seed(torch_seed)
    report = ft.materialize(m, "cpu", seed=seed, progress=False, **kw)
    return m, report


def spread(model, name):
    """Standard deviation of the model's output on a fixed input (logits, or the
    pooled output where the last hidden state is layer-normed)."""
    g = torch.Generator().manual_seed(123)
    model.eval()
    with torch.no_grad():
        if name in ("vit", "resnet"):
            out = model(pixel_values=torch.randn(8, 3, 32, 32, generator=g))
        else:
            out = model(input_ids=torch.randint(1, VOCAB, (8, 32), generator=g))
    y = out.logits if getattr(out, "logits", None) is not None else out.pooler_output
    assert bool(torch.isfinite(y).all())
    return float(y.std())


def bits(t):
    t = t.detach().contiguous()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[
        t.element_size()])


@pytest.mark.parametrize("name", MODELS)
def test_statistics_constants_and_buffers_match_transformers(name):
    m, report = ours(name)
    ref = reference(name)
    assert not report.unmatched and report.init == f"{type(m).__name__}.init_weights()"
    assert report.torch_draws == []
    mine, theirs = dict(m.named_parameters()), dict(ref.named_parameters())
    assert mine.keys() == theirs.keys()
    for k, q in theirs.items():
        p = mine[k].detach().double()
        q = q.detach().double()
        assert p.shape == q.shape and mine[k].dtype == theirs[k].dtype, k
        if bool((q == q.reshape(-1)[0]).all()):              # a constant: ones, zeros
            assert torch.equal(p, q), k
            continue
        assert torch.equal(p == 0, q == 0), k                # padding rows, zeroed parts
        n = q.numel()
        sp, sq = float(p.std()), float(q.std())
        se_mean = math.sqrt((sp ** 2 + sq ** 2) / n)
        se_std = math.sqrt((sp ** 2 + sq ** 2) / (2 * n))
        assert abs(float(p.mean()) - float(q.mean())) <= 6 * se_mean, (k, p.mean(), q.mean())
        assert abs(sp - sq) <= 6 * se_std, (k, sp, sq)
    mb, rb = dict(m.named_buffers()), dict(ref.named_buffers())
    assert mb.keys() == rb.keys()
    for k, b in rb.items():                   # inv_freq, position_ids, embed_scale, BN stats
        assert mb[k].dtype == b.dtype and torch.equal(mb[k], b), k
    for k, action in report.buffers:
        assert not action.startswith("UNSET"), (k, action)


@pytest.mark.parametrize("name", MODELS)
def test_forward_spread_within_15_percent(name):
    # the mean over a few seeds on each side: a small model's spread varies from draw
    # to draw, by about 1 % for the language models, 5 % for BERT and ViT and 12 % for
    # this ResNet (eval mode, fresh running statistics)
    n = 8 if name == "resnet" else 3
    a = sum(spread(ours(name, seed=s)[0], name) for s in range(n)) / n
    b = sum(spread(reference(name, torch_seed=s), name) for s in range(n)) / n
    assert abs(a / b - 1) < 0.15, (name, a, b)


@pytest.mark.parametrize("name", ["llama", "gemma", "gpt2"])
def test_ties_are_intact_and_allocated_once(name, monkeypatch, empty_like_shapes):
    allocated = empty_like_shapes                   # to_empty allocates through it
    m, report = ours(name)
    monkeypatch.undo()
    ref = reference(name)
    shape = tuple(m.get_input_embeddings().weight.shape)
    tensors = {id(t) for t in list(m.parameters()) + list(m.buffers())
               if tuple(t.shape) == shape}                 # GPT-2's c_proj has it too
    assert allocated.count(shape) == len(tensors)          # embedding and head: once
    tied = ref.all_tied_weights_keys
    assert tied                                            # these configs tie the head
    for target, source in tied.items():
        a, b = m.get_parameter(target), m.get_parameter(source)
        assert a is b and a.data_ptr() == b.data_ptr(), (target, source)
        assert torch.equal(a, m.get_parameter(source))
    head = m.get_output_embeddings().weight
    assert head is m.get_input_embeddings().weight
    # the head's own init is skipped (it would be overwritten by the tie in
    # transformers' own order), so the embedding keeps its padding row
    rec = report[next(n for n, p in m.named_parameters() if p is head)]
    assert rec.aliases and rec.status == "initialized"
    assert rec.history and all("lm_head" not in h for h in rec.history)
    cfg = configs()[name][1]
    pad = cfg.pad_token_id
    # the embedding's own draw, once (a second, the head's, would be a repeat from the
    # stream's next name), then its padding row
    want = torch.empty(head.shape)
    ft.normal_(want, 0.0, cfg.initializer_range, seed=0, stream=ft.stream_for(rec.name))
    if pad is not None:
        want[pad] = 0
        assert bool((ref.get_input_embeddings().weight[pad] == 0).all())
    assert torch.equal(bits(head), bits(want))


@pytest.mark.parametrize("name", MODELS)
def test_independent_of_torch_generator_and_seed_changes_every_random_parameter(name):
    a, _ = ours(name, seed=5, torch_seed=1)
    b, _ = ours(name, seed=5, torch_seed=2)
    for (k, p), (_, q) in zip(list(a.named_parameters()) + list(a.named_buffers()),
                              list(b.named_parameters()) + list(b.named_buffers())):
        assert torch.equal(bits(p), bits(q)), k
    c, _ = ours(name, seed=6, torch_seed=1)
    for (k, p), (_, q) in zip(a.named_parameters(), c.named_parameters()):
        if bool((p == p.reshape(-1)[0]).all()):
            assert torch.equal(p, q), k                     # constants stay
        else:
            nonzero = p != 0
            assert float((p == q)[nonzero].float().mean()) < 0.01, k


def test_accelerate_init_empty_weights_flags_are_cleared():
    """accelerate builds on meta by patching parameter registration, and transformers'
    init then marks every module _is_hf_initialized; the redirect clears the flags, so
    the model's init runs after to_empty and draws everything."""
    accelerate = pytest.importorskip("accelerate")
    cls, cfg = configs()["llama"]
    with accelerate.init_empty_weights():
        m = cls(cfg)
    assert any(getattr(mod, "_is_hf_initialized", False) for mod in m.modules())
    report = ft.materialize(m, "cpu", seed=0, progress=False)
    want, _ = ours("llama", seed=0)
    for (k, p), (_, q) in zip(m.named_parameters(), want.named_parameters()):
        assert torch.equal(bits(p), bits(q)), k
    assert not report.unmatched and not report.untouched


def test_report_names_what_the_model_code_called():
    m, report = ours("gpt2")
    rec = report["transformer.h.0.attn.c_proj.weight"]
    # Conv1D's normal_(std=0.02) first, then GPT-2's scaled residual init, which wins
    assert "GPT2PreTrainedModel._init_weights: normal_(mean=0.0, std=0.0" in rec.rule
    assert len(rec.history) == 2 and "std=0.02" in rec.history[0]
    std = 0.02 / math.sqrt(2 * 2)
    want = torch.empty(rec.shape)
    ft.normal_(want, 0.0, std, seed=0, stream=ft.stream_for(rec.name))
    assert torch.equal(m.transformer.h[0].attn.c_proj.weight.detach(), want)
    m, report = ours("vit")
    assert report["embeddings.cls_token"].rule == (  # torch's trunc_normal_ passes a and b on
        "ViTPreTrainedModel._init_weights: trunc_normal_(mean=0.0, std=0.02, a=-2.0, b=2.0)")
    m, report = ours("resnet")
    conv = report["resnet.embedder.embedder.convolution.weight"]
    assert "kaiming_normal_(" in conv.rule and "mode='fan_out'" in conv.rule
    text = str(report)
    assert "ResNetForImageClassification.init_weights()" in text


def test_the_old_hand_written_defaults_would_fail_these_checks():
    """What the table of torch defaults gave ResNet (kaiming_uniform(a=sqrt(5)) on every
    convolution, where the model draws kaiming_normal(fan_out, relu)): the spread and
    the statistics checks above catch it."""
    name = "resnet"
    rules = {torch.nn.Conv2d: ("kaiming_uniform", {"a": math.sqrt(5)}),
             torch.nn.Linear: {"weight": ("kaiming_uniform", {"a": math.sqrt(5)}),
                               "bias": ("uniform", -0.1, 0.1)},
             torch.nn.BatchNorm2d: {"weight": "ones", "bias": "zeros"}}
    a = sum(spread(ours(name, seed=s, defaults=False, rules=rules)[0], name)
            for s in range(8)) / 8
    b = sum(spread(reference(name, torch_seed=s), name) for s in range(8)) / 8
    assert abs(a / b - 1) > 0.15, (a, b)
    m, _ = ours(name, defaults=False, rules=rules)
    w = m.resnet.embedder.embedder.convolution.weight
    ref = reference(name).resnet.embedder.embedder.convolution.weight
    n = w.numel()
    assert abs(float(w.std()) - float(ref.std())) > 6 * float(ref.std()) / math.sqrt(n)
