"""Tests for normtut.plot (Agg backend: nothing is displayed)."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from normtut import plot as nplot  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_set_style_sets_rc_params():
    matplotlib.rcParams["axes.grid"] = False
    nplot.set_style()
    assert matplotlib.rcParams["axes.grid"] is True
    assert matplotlib.rcParams["figure.dpi"] == 100
    colors = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    assert colors == nplot.COLORS


class TestLivePlot:
    def test_accumulates_and_lines_hold_values(self):
        live = nplot.LivePlot(
            xlabel="epoch", ylabel="loss", legend=["train", "test"], title="training"
        )
        for epoch in range(1, 4):
            live.add(epoch, [1.0 / epoch, 2.0 / epoch])
        assert live.X == [[1, 2, 3], [1, 2, 3]]
        assert live.Y[0] == pytest.approx([1.0, 0.5, 1.0 / 3])
        lines = live.ax.get_lines()
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3])
        np.testing.assert_allclose(lines[1].get_ydata(), [2.0, 1.0, 2.0 / 3])
        assert live.ax.get_xlabel() == "epoch"
        assert live.ax.get_ylabel() == "loss"
        assert live.ax.get_title() == "training"
        legend = live.ax.get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["train", "test"]
        assert isinstance(live.figure, Figure)

    def test_none_entries_are_skipped(self):
        live = nplot.LivePlot(xlabel="x", ylabel="y", legend=["a", "b"])
        live.add(1, [1.0, None])
        live.add(2, [2.0, 5.0])
        assert live.X == [[1, 2], [2]]
        assert live.Y == [[1.0, 2.0], [5.0]]
        np.testing.assert_allclose(live.ax.get_lines()[1].get_ydata(), [5.0])

    def test_scalar_tensor_and_numpy_values(self):
        live = nplot.LivePlot(xlabel="x", ylabel="y")
        live.add(np.int64(1), torch.tensor(3.0))
        live.add(2, np.array([4.0]))
        assert live.X == [[1.0, 2.0]] and live.Y == [[3.0, 4.0]]

    def test_limits_and_log_axis(self):
        live = nplot.LivePlot(xlabel="x", ylabel="y", xlim=(0, 10), ylim=(1e-3, 1), logy=True)
        live.add(1, [0.5])
        assert live.ax.get_xlim() == (0, 10)
        assert live.ax.get_yscale() == "log"

    def test_identical_limits_are_widened_without_warning(self):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            live = nplot.LivePlot(xlabel="epoch", ylabel="y", xlim=(1, 1))
            live.add(1, [0.5])
        lo, hi = live.ax.get_xlim()
        assert lo < 1 < hi

    def test_wrong_number_of_values_raises(self):
        live = nplot.LivePlot(xlabel="x", ylabel="y", legend=["a", "b"])
        with pytest.raises(ValueError, match="2 curves"):
            live.add(1, [1.0])

    def test_not_managed_by_pyplot(self):
        before = plt.get_fignums()
        nplot.LivePlot(xlabel="x", ylabel="y").add(1, [1.0])
        assert plt.get_fignums() == before  # no second display by the inline backend

    def test_outside_a_kernel_nothing_is_displayed(self):
        live = nplot.LivePlot(xlabel="x", ylabel="y")
        live.add(1, [1.0])
        assert live._handle is None
        assert live._png().startswith(b"\x89PNG")


class TestPlotCurves:
    def test_labels_title_legend(self):
        x = torch.arange(5)
        ax = nplot.plot_curves(
            x, {"a": x**2, "b": [1, 2, 3, 4, 5]}, xlabel="step", ylabel="loss", title="curves"
        )
        assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
        assert ax.get_title() == "curves"
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
        np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0, 1, 4, 9, 16])

    def test_single_curve_no_legend_and_log(self):
        ax = nplot.plot_curves([1, 2], {"a": [1, 10]}, xlabel="x", ylabel="y", logy=True)
        assert ax.get_legend() is None
        assert ax.get_yscale() == "log"

    def test_draws_into_given_axes(self):
        fig, axes = plt.subplots(1, 2)
        ax = nplot.plot_curves([1, 2], {"a": [1, 2]}, xlabel="x", ylabel="y", ax=axes[1])
        assert ax is axes[1] and len(fig.axes) == 2 and len(axes[0].get_lines()) == 0


class TestLayerHistograms:
    @pytest.mark.parametrize("n, ncols, rows", [(1, 4, 1), (4, 4, 1), (5, 4, 2), (6, 3, 2)])
    def test_grid_and_titles(self, n, ncols, rows):
        torch.manual_seed(0)
        tensors = {f"layer {i}": torch.randn(100) * (i + 1) for i in range(n)}
        fig = nplot.plot_layer_histograms(tensors, ncols=ncols, title="activations")
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert len(visible) == n
        assert len(fig.axes) == rows * min(ncols, n)
        assert fig._suptitle.get_text() == "activations"
        for i, ax in enumerate(visible):
            std = tensors[f"layer {i}"].double().std(unbiased=False).item()
            assert ax.get_title() == f"layer {i}\nstd={std:.3g}"
            assert ax.get_xlabel() == "value" and ax.get_ylabel() == "density"

    def test_empty_raises(self):
        with pytest.raises(ValueError):
            nplot.plot_layer_histograms({})


class TestLayerStats:
    def test_curves_per_configuration(self):
        stats = {"xavier": [1.0, 0.9, 0.8], "small": [1e-2, 1e-4, 0.0]}
        ax = nplot.plot_layer_stats(stats, ylabel="activation std", title="depth")
        assert ax.get_yscale() == "log"
        assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "activation std"
        assert ax.get_title() == "depth"
        lines = ax.get_lines()
        assert len(lines) == 2
        np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3])
        # zero cannot be drawn on a log axis: it is left out (NaN), not clipped
        assert np.isnan(lines[1].get_ydata()[2])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["xavier", "small"]

    def test_linear_axis(self):
        ax = nplot.plot_layer_stats({"a": [0.0, 1.0]}, ylabel="y", title="t", logy=False)
        assert ax.get_yscale() == "linear" and ax.get_lines()[0].get_ydata()[0] == 0.0


def test_liveplot_in_a_kernel_stores_exactly_one_figure():
    """Executed in a real Jupyter kernel, a LivePlot updated 5 times leaves ONE image output."""
    pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbformat.v4 import new_code_cell, new_notebook

    source = (
        "from normtut.plot import LivePlot\n"
        "live = LivePlot(xlabel='epoch', ylabel='loss', legend=['train', 'test'])\n"
        "for epoch in range(1, 6):\n"
        "    live.add(epoch, [1 / epoch, None if epoch % 2 else 2 / epoch])\n"
        "print(live.X)\n"
    )
    nb = new_notebook(cells=[new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert "[[1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0]]" in "".join(
        o.text for o in outputs if o.output_type == "stream"
    )


class TestPlotTrajectories:
    def test_paths_start_end_minimum_and_labels(self):
        from normtut.landscapes import rosenbrock

        land = rosenbrock()
        path = np.array([[-1.0, 2.0], [0.0, 0.5], [0.9, 0.8]])
        ax = nplot.plot_trajectories(land, {"GD": path, "Adam": torch.tensor(path) * 0.5})
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["GD", "Adam", "minimum"]
        assert ax.get_xlabel() == "$x$" and ax.get_title() == "Rosenbrock"
        gd = ax.get_lines()[0]
        np.testing.assert_array_equal(gd.get_xdata(), path[:, 0])
        assert ax.get_xlim() == land.xlim and ax.get_ylim() == land.ylim
        assert ax.collections, "no contour lines were drawn"

    def test_landscape_without_minimum_and_single_path_has_no_legend(self):
        from normtut.landscapes import saddle

        ax = nplot.plot_trajectories(saddle(), {"SGD": [[1.0, 0.1], [0.5, 0.2]]}, title="s")
        assert ax.get_legend() is None and ax.get_title() == "s"

    def test_log_levels_on_a_surface_with_negative_values_do_not_warn(self):
        from normtut.landscapes import Landscape

        land = Landscape(
            "shifted", lambda x, y: x * x + y * y - 1.0, (-1, 1), (-1, 1), log_levels=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ax = nplot.plot_trajectories(land, {"p": [[0.5, 0.5]]})
        assert ax.collections
