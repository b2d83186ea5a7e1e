"""Tests for normtut.params: tables, tie detection, counts, gradient statistics."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normtut.params import (
    GradTable,
    ParamTable,
    count_parameters,
    grad_stats,
    param_table,
    snapshot,
    tied_parameters,
    update_ratio,
)

# --------------------------------------------------------------------------------------------
# Model zoo: (builder, number of input features); each builder returns a fresh, seeded model
# --------------------------------------------------------------------------------------------


def _block() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())


def nested_sequential() -> nn.Module:
    outer = nn.Sequential()
    for i in range(3):
        outer.add_module(f"block {i}", _block())
    return nn.Sequential(outer, nn.Linear(4, 1))


def module_list() -> nn.Module:
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = torch.tanh(layer(x))
            return self.head(x)

    return Stack()


def module_dict() -> nn.Module:
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branches = nn.ModuleDict({"left": nn.Linear(4, 3), "right": nn.Linear(4, 3)})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.branches["left"](x) * self.branches["right"](x)

    return Branches()


def with_buffers() -> nn.Module:
    class NormBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.bn = nn.BatchNorm1d(6)
            self.register_buffer("scale", torch.tensor(2.0))
            self.register_buffer("cache", torch.zeros(3), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.fc(x)) * self.scale

    return nn.Sequential(NormBlock(), nn.ReLU(), nn.Linear(6, 2))


def tied_twice() -> nn.Module:
    shared = nn.Linear(4, 4)
    return nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(4, 1))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 11, dim: int = 4, tie: bool = True) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.decoder = nn.Linear(dim, vocab, bias=False)
        if tie:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.hidden(self.embedding(tokens))))


def tied_lm() -> nn.Module:
    return TinyLM(tie=True)


def untied_lm() -> nn.Module:
    return TinyLM(tie=False)


MODELS = {
    "nested_sequential": nested_sequential,
    "module_list": module_list,
    "module_dict": module_dict,
    "with_buffers": with_buffers,
    "tied_twice": tied_twice,
    "tied_lm": tied_lm,
    "untied_lm": untied_lm,
}

# expected tie groups per model
EXPECTED_TIES = {
    "nested_sequential": [],
    "module_list": [],
    "module_dict": [],
    "with_buffers": [],
    "tied_twice": [["0.weight", "2.weight"], ["0.bias", "2.bias"]],
    "tied_lm": [["embedding.weight", "decoder.weight"]],
    "untied_lm": [],
}


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[name]()


def example_input(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if name.endswith("_lm"):
        return torch.randint(0, 11, (5, 3), generator=g)
    return torch.randn(5, 4, generator=g)


def backward_once(model: nn.Module, name: str) -> None:
    model(example_input(name)).pow(2).mean().backward()


# --------------------------------------------------------------------------------------------
# param_table
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_table_rows_follow_named_parameters(name):
    model = make(name)
    table = param_table(model)
    expected = list(model.named_parameters(remove_duplicate=False))
    assert isinstance(table, ParamTable)
    assert table.names == [n for n, _ in expected]
    for row, (_, p) in zip(table, expected, strict=True):
        assert row.shape == tuple(p.shape)
        assert row.numel == p.numel()
        assert row.dtype == str(p.dtype).removeprefix("torch.")
        assert row.device == str(p.device)
        assert row.requires_grad == p.requires_grad
        assert row.kind == "param"


@pytest.mark.parametrize("name", MODELS)
def test_table_total_counts_unique_tensors(name):
    model = make(name)
    table = param_table(model)
    assert table.total == sum(p.numel() for p in model.parameters())
    assert table.n_unique == len(list(model.parameters()))
    assert table.duplicates == len(table) - table.n_unique
    assert table.duplicates == sum(len(g) - 1 for g in EXPECTED_TIES[name])


@pytest.mark.parametrize("name", MODELS)
def test_table_with_buffers_matches_state_dict(name):
    model = make(name)
    table = param_table(model, include_buffers=True)
    state = model.state_dict()
    # every state_dict key is a row; rows not in state_dict are non-persistent buffers
    assert set(state) <= set(table.names)
    extra = set(table.names) - set(state)
    assert all(table[n].kind == "buffer" for n in extra)
    assert all(table[n].shape == tuple(state[n].shape) for n in state)
    buffer_names = [n for n, _ in model.named_buffers()]
    assert [r.name for r in table if r.kind == "buffer"] == buffer_names
    assert table.total_buffers == sum(b.numel() for b in model.buffers())
    assert table.total == table.total_params + table.total_buffers


def test_buffers_are_flagged_and_non_persistent_ones_listed():
    table = param_table(make("with_buffers"), include_buffers=True)
    kinds = {r.name: r.kind for r in table}
    assert kinds["0.bn.running_mean"] == "buffer"
    assert kinds["0.bn.num_batches_tracked"] == "buffer"
    assert kinds["0.bn.weight"] == "param"
    # non-persistent buffer: in the table, not in state_dict
    assert "0.cache" in kinds
    assert "0.cache" not in make("with_buffers").state_dict()
    assert table["0.bn.num_batches_tracked"].dtype == "int64"
    assert table["0.scale"].shape == ()
    assert not param_table(make("with_buffers")).total_buffers


@pytest.mark.parametrize("name", MODELS)
def test_shared_with_is_symmetric_and_matches_ties(name):
    table = param_table(make(name))
    for row in table:
        for other in row.shared_with:
            assert row.name in table[other].shared_with
    groups = [sorted([r.name, *r.shared_with]) for r in table if r.shared_with]
    expected = [sorted(g) for g in EXPECTED_TIES[name] for _ in g]
    assert sorted(groups) == sorted(expected)


@pytest.mark.parametrize("name", MODELS)
def test_text_and_html_rendering(name):
    model = make(name)
    table = param_table(model, include_buffers=True)
    text, page = str(table), table._repr_html_()
    assert repr(table) == text
    for n, p in model.named_parameters(remove_duplicate=False):
        assert n in text
        assert n in page
        shape = "(" + ", ".join(map(str, p.shape)) + ("," if p.dim() == 1 else "") + ")"
        assert shape in text
        assert shape in page
    footer = text.split("\n" + "-" * 4)[-1]  # below the last rule
    footer = footer.split("\n", 1)[-1]
    assert f"{table.total:,}" in footer
    assert all(len(line) <= 80 for line in footer.splitlines()), "the footer wraps at 80"
    assert page.startswith("<table") and page.endswith("</table>")
    if table.duplicates:
        assert f"{table.duplicates} entr" in footer


def test_html_escapes_names():
    model = nn.Module()
    model.add_module("a<b>", nn.Linear(2, 2))
    page = param_table(model)._repr_html_()
    assert "a&lt;b&gt;.weight" in page
    assert "<b>" not in page


def test_text_columns_are_aligned():
    lines = str(param_table(make("nested_sequential"))).splitlines()
    header, rule, body = lines[0], lines[1], lines[2:-2]
    # column spans from the dashed rule: runs of '-' separated by two spaces
    spans, start = [], 0
    for run in rule.split("  "):
        spans.append((start, start + len(run)))
        start += len(run) + 2
    assert len(spans) == len(ParamTable.columns)
    name_span, numel_span = spans[0], spans[2]
    assert header[numel_span[0] : numel_span[1]].strip() == "numel"
    for line in body:
        # names are left-aligned (start at column 0), numel is right-aligned (ends on a digit)
        assert not line[name_span[0]].isspace()
        assert line[numel_span[1] - 1].isdigit()


def test_to_dict_and_getitem():
    table = param_table(make("tied_lm"))
    d = table.to_dict()
    assert list(d) == ["embedding.weight", "hidden.weight", "hidden.bias", "decoder.weight"]
    assert d["decoder.weight"]["shared_with"] == ("embedding.weight",)
    assert d["hidden.weight"]["shape"] == (4, 4)
    assert d["embedding.weight"]["numel"] == 44
    with pytest.raises(KeyError, match="nope"):
        table["nope"]


def test_table_follows_dtype_and_frozen_parameters():
    model = make("nested_sequential").double()
    model[1].weight.requires_grad_(False)
    table = param_table(model)
    assert {r.dtype for r in table} == {"float64"}
    assert table["1.weight"].requires_grad is False
    assert table.trainable == table.total - model[1].weight.numel()
    assert "trainable" in table.footer()


def test_lazy_module_is_shown_uninitialized_then_materialized():
    lazy = nn.Sequential(nn.LazyLinear(3))
    table = param_table(lazy)
    assert [r.shape for r in table] == [None, None]
    assert table.uninitialized == 2 and table.total == 0
    assert "uninitialized" in str(table)
    with pytest.raises(ValueError, match="forward"):
        count_parameters(lazy)
    lazy(torch.randn(2, 5))
    table = param_table(lazy)
    assert table["0.weight"].shape == (3, 5)
    assert table.total == count_parameters(lazy) == 18


def test_param_table_rejects_non_modules():
    with pytest.raises(TypeError, match="Tensor"):
        param_table(torch.zeros(3))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# tied_parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_tied_parameters(name):
    assert tied_parameters(make(name)) == EXPECTED_TIES[name]


def test_equal_copies_are_not_tied():
    layer = nn.Linear(4, 4)
    net = nn.Sequential(layer, copy.deepcopy(layer))
    assert torch.equal(net[0].weight, net[1].weight)
    assert tied_parameters(net) == []
    assert all(not r.shared_with for r in param_table(net))


def test_load_state_dict_into_equal_copy_does_not_tie():
    tied = make("tied_lm")
    untied = untied_lm()
    untied.load_state_dict(tied.state_dict())
    assert torch.equal(untied.decoder.weight, untied.embedding.weight)
    assert tied_parameters(untied) == []


def test_wrapping_in_new_parameter_breaks_the_tie_despite_shared_storage():
    lm = make("tied_lm")
    lm.decoder.weight = nn.Parameter(lm.embedding.weight)  # same storage, new object
    assert lm.decoder.weight.data_ptr() == lm.embedding.weight.data_ptr()
    assert tied_parameters(lm) == []


@pytest.mark.parametrize("name", ["tied_twice", "tied_lm"])
def test_deepcopy_and_to_keep_ties(name):
    model = make(name)
    clone = copy.deepcopy(model)
    assert tied_parameters(clone) == EXPECTED_TIES[name]
    assert tied_parameters(clone.to(torch.float64)) == EXPECTED_TIES[name]


# --------------------------------------------------------------------------------------------
# count_parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_count_unique_matches_parameters(name):
    model = make(name)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_count_with_duplicates_matches_state_dict_params(name):
    model = make(name)
    buffers = {n for n, _ in model.named_buffers()}
    from_state = sum(t.numel() for k, t in model.state_dict().items() if k not in buffers)
    assert count_parameters(model, unique=False) == from_state
    dup = sum(model.get_parameter(g[0]).numel() * (len(g) - 1) for g in EXPECTED_TIES[name])
    assert count_parameters(model, unique=False) - count_parameters(model) == dup


def test_counts_known_answers():
    assert count_parameters(nn.Linear(4, 8)) == 40
    assert count_parameters(make("tied_twice")) == 20 + 5
    assert count_parameters(make("tied_twice"), unique=False) == 40 + 5
    # V*d + d*d + d (tied) versus + V*d more (untied)
    assert count_parameters(make("tied_lm")) == 44 + 20
    assert count_parameters(make("untied_lm")) == 44 + 20 + 44


def test_count_trainable_only():
    model = make("tied_lm")
    model.embedding.weight.requires_grad_(False)  # freezes the decoder too: same tensor
    assert count_parameters(model, trainable_only=True) == 20
    assert count_parameters(model, trainable_only=True, unique=False) == 20
    assert count_parameters(model) == 64


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    repeat=st.integers(1, 3),
)
def test_count_property_repeated_layer(widths, repeat):
    layers = [nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False)]
    square = nn.Linear(widths[-1], widths[-1])
    model = nn.Sequential(*layers, *([square] * repeat))
    base = sum((a + 1) * b for a, b in zip(widths, widths[1:], strict=False))
    extra = (widths[-1] + 1) * widths[-1]
    assert count_parameters(model) == base + extra
    assert count_parameters(model, unique=False) == base + repeat * extra
    assert param_table(model).duplicates == 2 * (repeat - 1)


# --------------------------------------------------------------------------------------------
# grad_stats and update_ratio
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_grad_stats_before_backward_is_none(name):
    stats = grad_stats(make(name))
    assert isinstance(stats, GradTable)
    assert stats.names == [n for n, _ in make(name).named_parameters()]
    assert all(not r.has_grad and r.norm is None and r.std is None for r in stats)
    assert "none" in str(stats) and "none" in stats._repr_html_()
    assert "no gradients yet" in stats.footer()


@pytest.mark.parametrize("name", MODELS)
def test_grad_stats_after_backward(name):
    model = make(name)
    backward_once(model, name)
    stats = grad_stats(model)
    for row in stats:
        g = model.get_parameter(row.name).grad.double()
        assert row.has_grad
        assert math.isclose(row.norm, g.norm().item(), rel_tol=1e-9)
        assert math.isclose(row.mean, g.mean().item(), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(row.std, g.std(correction=0).item(), rel_tol=1e-9, abs_tol=1e-15)
        assert math.isclose(row.max_abs, g.abs().max().item(), rel_tol=1e-9)
    total = math.sqrt(sum(r.norm**2 for r in stats))
    assert f"{total:.3e}" in stats.footer()
    assert "none" not in str(stats).splitlines()[2]


def test_grad_stats_tied_listed_once_and_zero_grad_resets():
    model = make("tied_lm")
    backward_once(model, "tied_lm")
    stats = grad_stats(model)
    assert "decoder.weight" not in stats.names
    assert stats["decoder.weight"] is stats["embedding.weight"]
    assert stats["embedding.weight"].shared_with == ("decoder.weight",)
    assert "(= decoder.weight)" in str(stats)
    model.zero_grad(set_to_none=True)
    assert all(not r.has_grad for r in grad_stats(model))


def test_grad_stats_partial_and_frozen():
    model = make("nested_sequential")
    model[1].weight.requires_grad_(False)
    backward_once(model, "nested_sequential")
    stats = grad_stats(model)
    assert not stats["1.weight"].has_grad
    assert stats["1.bias"].has_grad
    assert "1 with .grad None" in stats.footer()
    norms = stats.norms()
    assert norms["1.weight"] is None and norms["1.bias"] > 0
    assert set(stats.to_dict()) == set(stats.names)


def test_grad_stats_one_element_std_is_zero_not_nan():
    p = nn.Linear(1, 1)
    p(torch.ones(1, 1)).sum().backward()
    row = grad_stats(p)["bias"]
    assert row.std == 0.0


def test_update_ratio_known_answer():
    model = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))  # norm 5
        model.bias.zero_()
    before = snapshot(model)
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.3, 0.4]]))  # step norm 0.5
    ratio = update_ratio(before, model)
    assert math.isclose(ratio["weight"], 0.1, rel_tol=1e-6)
    assert ratio["bias"] == 0.0
    with torch.no_grad():
        model.bias.add_(1.0)
    assert update_ratio(before, snapshot(model))["bias"] == math.inf


def test_snapshot_is_detached_copy_and_sgd_ratio_is_lr_scaled():
    model = make("tied_lm")
    before = snapshot(model)
    assert set(before) == {"embedding.weight", "hidden.weight", "hidden.bias"}
    assert all(not t.requires_grad for t in before.values())
    assert before["embedding.weight"].data_ptr() != model.embedding.weight.data_ptr()
    backward_once(model, "tied_lm")
    lr = 0.1
    torch.optim.SGD(model.parameters(), lr=lr).step()
    ratio = update_ratio(before, model)
    for name, p in model.named_parameters():
        expected = lr * p.grad.norm().item() / before[name].norm().item()
        assert math.isclose(ratio[name], expected, rel_tol=1e-5)


def test_update_ratio_missing_name():
    with pytest.raises(KeyError, match="ghost"):
        update_ratio({"ghost": torch.ones(2)}, nn.Linear(2, 2))
