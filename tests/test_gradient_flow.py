"""The gradient-flow rule's depth groups (``babysit.gradient_flow``, docs/architecture.md):
layers that read the same input are judged as one, so a healthy transformer, whose query and key
projections get a tiny gradient at init, is silent in ``diagnose`` and in the training monitor,
while a deep sigmoid net, siblings or not, is still VANISHING_GRADIENTS."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import babysit as bs
from babysit.gradient_flow import SameInput, measured_layer, vanishing_or_exploding
from babysit.thresholds import resolve
from babysit.train.monitors import ActivationStats

THRESHOLDS = resolve(None)
VOCAB, LENGTH = 64, 16


def tokens(n: int = 192, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences of 16 tokens; the label says whether token 7 occurs (about half do)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    return ids, (ids == 7).any(1).long()


class Attention(nn.Module):
    """One hand-written self-attention layer (query/key/value Linears, no container) and a
    head: the shape of a course assignment's transformer. ``std``: BERT's init (normal, std
    0.02, zero biases), under which the query/key gradients are ~1e-5 of the head's."""

    def __init__(self, d: int = 32, std: float | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, 2)
        if std is not None:
            for layer in (self.query, self.key, self.value, self.proj, self.head):
                nn.init.normal_(layer.weight, std=std)
                nn.init.zeros_(layer.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        q, k, v = self.query(h), self.key(h), self.value(h)
        a = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, -1)
        return self.head((h + self.proj(a @ v)).mean(1))


def bert_like() -> Attention:
    return Attention(std=0.02)


class Encoder(nn.Module):
    """nn.TransformerEncoder (nn.MultiheadAttention with a fused in_proj) and a head."""

    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        layer = nn.TransformerEncoderLayer(d, 2, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(1))


class SiblingSigmoid(nn.Module):
    """A deep sigmoid net (small init) whose first layer has a sibling on the same input: the
    group's gradient is as vanished as each member's."""

    def __init__(self, depth: int = 12) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(40, 100), nn.Linear(40, 100)
        self.body = bs.nn.mlp(100, [100] * depth, 10, activation="sigmoid", init=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.sigmoid(self.a(x) + self.b(x)))


class Examples(torch.utils.data.Dataset):
    """Dict examples, as a Hugging Face ``Trainer`` takes them."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def bert():
    T = pytest.importorskip("transformers")
    config = T.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    return T.BertForSequenceClassification(config)


def loud(findings) -> set[str]:
    return {f.code for f in findings if f.severity in ("warning", "error")}


# -- the rule ---------------------------------------------------------------------------------

# A healthy tiny BERT at init (seed 0), measured: query/key ~3e-6, value and the rest of the
# block ~1.5e-3, the classifier 0.19.
BERT_NORMS = {
    "layer.0.query": 2.7e-6,
    "layer.0.key": 3.8e-6,
    "layer.0.value": 1.5e-3,
    "layer.0.output": 1.3e-3,
    "pooler": 0.2,
    "classifier": 0.19,
}


def test_siblings_are_one_depth_group():
    assert [f.code for f in vanishing_or_exploding(BERT_NORMS, THRESHOLDS)] == [
        "VANISHING_GRADIENTS"
    ]  # one layer at a time: the query alone is judged (the false alarm)
    groups = {"layer.0.key": "layer.0.query", "layer.0.value": "layer.0.query"}
    assert vanishing_or_exploding(BERT_NORMS, THRESHOLDS, groups) == []


def test_a_vanished_group_is_still_vanishing():
    norms = {"a": 1e-8, "b": 2e-8, "mid": 1e-5, "head": 0.3}
    (found,) = vanishing_or_exploding(norms, THRESHOLDS, {"b": "a"})
    assert found.code == "VANISHING_GRADIENTS"
    assert found.evidence["first_layer"] == "b" and found.evidence["first_group"] == ["a", "b"]
    assert found.evidence["first_grad_norm"] == 2e-8 and "last_group" not in found.evidence


def test_exploding_judges_the_last_group_by_its_largest_member():
    norms = {"first": 50.0, "mid": 1.0, "k": 1e-4, "v": 0.1}
    assert vanishing_or_exploding(norms, THRESHOLDS) != []  # 50 / 1e-4
    (found,) = vanishing_or_exploding(norms, THRESHOLDS, {"v": "k"})
    assert found.code == "EXPLODING_GRADIENTS" and found.evidence["last_layer"] == "v"
    assert found.evidence["ratio"] == pytest.approx(500.0)


def test_one_depth_group_has_nothing_to_compare():
    norms = {"left": 1e-9, "right": 1.0}
    assert vanishing_or_exploding(norms, THRESHOLDS) != []
    assert vanishing_or_exploding(norms, THRESHOLDS, {"right": "left"}) == []


# -- SameInput --------------------------------------------------------------------------------


def test_same_input_finds_query_key_value_and_nothing_in_a_chain():
    model = Attention()
    layers = {m: n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    siblings = SameInput(layers)
    model(tokens(4)[0])
    assert siblings.groups == {
        "query": "query",
        "key": "query",
        "value": "query",
        "proj": "proj",
        "head": "head",
    }
    assert all(not m._forward_pre_hooks for m in layers)  # each hook went after one call
    chain = bs.nn.mlp(8, [8, 8], 2)
    siblings = SameInput({m: n for n, m in chain.named_modules() if isinstance(m, nn.Linear)})
    chain(torch.randn(3, 8))
    assert siblings.groups == {"0": "0", "2": "2", "4": "4"}


def test_same_input_remove_drops_the_hooks_of_layers_never_called():
    model = Attention()
    siblings = SameInput({model.head: "head", model.query: "query"})
    siblings.remove()
    model(tokens(4)[0])
    assert siblings.groups == {} and not model.head._forward_pre_hooks


def test_no_hook_outlives_the_first_forward_and_the_model_still_pickles():
    """nn.MultiheadAttention never calls its ``out_proj`` module: the root's forward hook
    removes that layer's hook too, so ``torch.save(model)`` works after the first step."""
    import io

    model = Encoder()
    ids, labels = tokens(64)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with bs.watch(model, opt, monitors=[ActivationStats(every=1000)]) as watcher:
        loss = nn.functional.cross_entropy(model(ids), labels)
        watcher.observe(loss)
        loss.backward()
        opt.step()
        assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
        torch.save(model, io.BytesIO())


def test_a_freed_input_whose_memory_is_reused_is_not_a_sibling():
    """In eval, a chain's inputs are freed as it goes; the weak reference tells them apart."""
    a, b = nn.Linear(8, 8), nn.Linear(8, 8)
    siblings = SameInput({a: "a", b: "b"})
    with torch.no_grad():
        a(torch.randn(4, 8))  # its input is freed at once
        b(torch.randn(4, 8))  # may land at the same address
    assert siblings.groups == {"a": "a", "b": "b"}


# -- diagnose and the monitor on healthy transformers ----------------------------------------


def gpt2(lm: bool):
    T = pytest.importorskip("transformers")
    config = T.GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_labels=2,
        pad_token_id=0, bos_token_id=1, eos_token_id=1,
    )  # fmt: skip
    return T.GPT2LMHeadModel(config) if lm else T.GPT2ForSequenceClassification(config)


@pytest.mark.parametrize("seed", [0, 1])
def test_diagnose_is_silent_on_a_healthy_tiny_bert(seed):
    bt = pytest.importorskip("babysit.integrations.transformers")
    torch.manual_seed(seed)
    ids, labels = tokens(128, seed)
    found = bt.diagnose(bert(), Examples(ids, labels), lr=1e-3, checks=["gradient_flow"])
    assert loud(found.findings) == set(), found.findings


@pytest.mark.parametrize("lm", [False, True])
def test_diagnose_is_silent_on_a_healthy_tiny_gpt2(lm):
    bt = pytest.importorskip("babysit.integrations.transformers")
    torch.manual_seed(0)
    ids, labels = tokens(128)
    data = Examples(ids, ids if lm else labels)
    found = bt.diagnose(gpt2(lm), data, lr=1e-3, checks=["gradient_flow"])
    assert loud(found.findings) == set(), found.findings


@pytest.mark.parametrize("lm", [False, True])
def test_diagnose_measures_gpt2s_conv1d_and_finds_its_muted_blocks(lm):
    """GPT-2's projections are transformers' ``Conv1D`` (a linear layer, weight stored
    transposed). With every LayerNorm gain at 1e-6 its blocks barely reach the loss: the first
    projection's gradient is ~1e-7 of the head's. Measuring only nn.Linear, babysit saw one
    layer (the head) and could not judge the flow at all."""
    bt = pytest.importorskip("babysit.integrations.transformers")
    torch.manual_seed(0)
    model = gpt2(lm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.mul_(1e-6)
    ids, labels = tokens(128)
    found = bt.diagnose(model, Examples(ids, ids if lm else labels), checks=["gradient_flow"])
    (vanishing,) = [f for f in found.findings if f.code == "VANISHING_GRADIENTS"]
    assert vanishing.evidence["first_layer"] == "transformer.h.0.attn.c_attn"


def test_measured_layer_knows_transformers_conv1d_by_its_module():
    T = pytest.importorskip("transformers.pytorch_utils")

    class Conv1D(nn.Module):  # the same name, not transformers' class
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 4))

    class Lora(T.Conv1D):  # a subclass of transformers' class (an adapter, say)
        pass

    assert measured_layer(T.Conv1D(4, 8)) and measured_layer(nn.Linear(2, 3))
    assert measured_layer(Lora(4, 8))
    assert not measured_layer(Conv1D()) and not measured_layer(nn.LayerNorm(4))


@pytest.mark.parametrize("build", [Attention, bert_like, Encoder])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_diagnose_is_silent_on_healthy_attention(build, seed):
    torch.manual_seed(seed)
    found = bs.diagnose(build(), tokens(256, seed), lr=1e-3, checks=["gradient_flow"])
    assert loud(found.findings) == set(), found.findings


def test_diagnose_still_finds_a_deep_sigmoid_net_whose_first_layer_has_a_sibling():
    torch.manual_seed(0)
    x, y = torch.randn(256, 40), torch.randint(0, 10, (256,))
    found = bs.diagnose(SiblingSigmoid(), (x, y), checks=["gradient_flow"])
    (vanishing,) = [f for f in found.findings if f.code == "VANISHING_GRADIENTS"]
    assert vanishing.evidence["first_group"] == ["a", "b"]


def watched(model: nn.Module, x, y, steps: int, lr: float = 1e-3, batch: int = 32):
    """A plain loop under ``watch`` with the gradient monitor sampling every step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    with bs.watch(model, opt, monitors=[ActivationStats(every=1)]) as watcher:
        for _ in range(steps):
            index = torch.randint(0, len(x), (batch,), generator=g)
            out = model(x[index])
            logits = getattr(out, "logits", out)
            loss = nn.functional.cross_entropy(logits, y[index])
            watcher.observe(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return watcher


@pytest.mark.parametrize("build", [bert, Attention, bert_like, Encoder])
def test_watch_is_silent_on_healthy_attention(build):
    torch.manual_seed(0)
    ids, labels = tokens(192)
    watcher = watched(build(), ids, labels, steps=12)
    assert not {"VANISHING_GRADIENTS", "EXPLODING_GRADIENTS"} & loud(watcher.findings)


def test_watch_still_finds_a_deep_sigmoid_net():
    torch.manual_seed(0)
    x, y = torch.randn(512, 40), torch.randint(0, 10, (512,))
    model = bs.nn.mlp(40, [100] * 19, 10, activation="sigmoid", init=None)
    watcher = watched(model, x, y, steps=4, lr=1e-4)
    assert "VANISHING_GRADIENTS" in loud(watcher.findings)
    watcher = watched(SiblingSigmoid(), x, y, steps=4, lr=1e-4)
    (found,) = [f for f in watcher.findings if f.code == "VANISHING_GRADIENTS"]
    assert found.evidence["first_group"] == ["a", "b"]
