"""The command line end to end, and the plot helpers."""
import math
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import gmmlib
from gmmlib import cli, plot


def run_cli(*args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "gmmlib", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_with_the_seed_flags_writes_a_png(tmp_path):
    png = tmp_path / "fit.png"
    r = run_cli("--samples", "400", "--components", "3", "--dims", "2", "--iterations", "200",
                "--family", "diagonal", "--log_freq", "50", "--radius", "6", "--mixture_lr", "0.05",
                "--component_lr", "0.05", "--seed", "1", "--no-visualize", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "final mean NLL" in r.stdout and "step    200" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = plt.imread(png)
    assert img.shape[0] > 300 and img.std() > 0.05  # a real picture, not a blank canvas


@pytest.mark.parametrize("args,match", [
    (["--samples", "2"], "--samples 2 is fewer than --components 5"),
    (["--mixture_lr", "0"], "mixture_lr must be a positive"),
    (["--iterations", "-5"], "iterations must be a positive integer"),
    (["--log_freq", "0"], "--log_freq must be a positive integer"),
    (["--dims", "0"], "--dims must be a positive integer"),
    (["--batch_size", "0"], "batch_size must be a positive integer"),
    (["--radius", "1e308"], "--radius must be at most 1e8"),
    (["--dims", "1", "--plot", "x.png"], "--plot and --visualize draw two features"),
])
def test_cli_bad_input_is_one_line_and_nonzero(args, match):
    r = run_cli("--no-progress", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in r.stderr


def test_cli_minibatches_in_process(capsys):
    """--batch_size reaches fit_gd: 300 steps of 50 of the 400 points end near the full fit."""
    args = ["--samples", "400", "--components", "3", "--iterations", "300", "--seed", "1", "--no-progress"]
    assert cli.main(args) == 0
    full = float(capsys.readouterr().out.split("final mean NLL ")[1].split()[0])
    assert cli.main(args + ["--batch_size", "50"]) == 0
    out = capsys.readouterr().out
    assert abs(float(out.split("final mean NLL ")[1].split()[0]) - full) < 0.01
    assert "final mean NLL" in out


def test_cli_em_reaches_the_gd_optimum_and_warns_in_one_line(capsys):
    args = ["--samples", "400", "--components", "3", "--seed", "1", "--no-progress"]
    assert cli.main(args) == 0
    gd = float(capsys.readouterr().out.split("final mean NLL ")[1].split()[0])
    assert cli.main(args + ["--method", "em"]) == 0
    out = capsys.readouterr().out
    assert "iterations" in out and abs(float(out.split("final mean NLL ")[1].split()[0]) - gd) < 1e-3
    assert cli.main(args + ["--method", "em", "--iterations", "1"]) == 0  # stops before converging
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(fit_em: " in err[0] and "max_iter=1" in err[0]
    assert err[0].startswith("warning: Best performing initialization did not converge")
    assert cli.main(args + ["--method", "em", "--batch_size", "10"]) == 2
    assert "--batch_size is for --method gd" in capsys.readouterr().err


def test_cli_unknown_family_lists_choices():
    r = run_cli("--family", "bogus")
    assert r.returncode != 0 and "shared_isotropic" in r.stderr and "Traceback" not in r.stderr


def test_density_grid_is_the_pointwise_density():
    X, labels, truth = gmmlib.generate_data(200, 3, 2, seed=0)
    xx, yy, logp = plot.density_grid(truth, (-8, 8), (-6, 6), n=50)
    assert logp.shape == (50, 50) and xx.shape == (50, 50)
    idx = [(0, 0), (10, 31), (49, 49)]
    pts = np.array([[xx[i, j], yy[i, j]] for i, j in idx])
    ref = truth.log_prob(pts).detach().numpy()
    np.testing.assert_allclose([logp[i, j] for i, j in idx], ref, rtol=1e-12)
    # a Snapshot of the same parameters draws the same density
    snap = gmmlib.Snapshot(0, truth.weights.numpy(), truth.means.numpy(), truth.covariances.numpy(), 0.0)
    np.testing.assert_allclose(plot.density_grid(snap, (-8, 8), (-6, 6), n=50)[2], logp, rtol=1e-12)


def test_marginal_plot_of_higher_dimensional_model_uses_the_exact_marginal():
    X, labels, truth = gmmlib.generate_data(200, 2, 4, seed=0)
    xx, yy, logp = plot.density_grid(truth, (-8, 8), (-8, 8), n=20, dims=(1, 3))
    w, m, c = truth.weights.numpy(), truth.means.numpy()[:, [1, 3]], truth.covariances.numpy()[:, [1, 3]][:, :, [1, 3]]
    from scipy import stats
    p = sum(w[k] * stats.multivariate_normal(m[k], c[k]).pdf(np.stack([xx, yy], -1)) for k in range(2))
    np.testing.assert_allclose(logp, np.log(p), rtol=1e-10)


def test_ellipse_is_the_one_sigma_contour():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    pts = plot.ellipse_points([1.0, -1.0], cov, nsig=2.0)
    d = pts - [1.0, -1.0]
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(maha, 4.0, rtol=1e-10)


def test_plot_helpers_return_their_axes():
    X, labels, truth = gmmlib.generate_data(200, 3, 2, seed=0)
    model = gmmlib.GaussianMixture(3, 2)
    h = gmmlib.fit_gd(model, X, iterations=20, progress=False, log_every=10)
    fig, axes = plt.subplots(1, 4)
    assert plot.plot_fit(axes[0], model, X, labels=labels) is axes[0]
    assert plot.plot_loss(axes[1], h) is axes[1]
    assert plot.plot_ellipses(axes[2], h.snapshots[0]) is axes[2]
    assert plot.plot_density(axes[3], model, X, kind="heatmap") is axes[3]
    assert len(axes[3].images) == 1
    with pytest.raises(ValueError, match="kind"):
        plot.plot_density(axes[3], model, X, kind="surface")
    plt.close(fig)


def test_responsibility_colours_mix_the_component_colours():
    """Two unit Gaussians at 0 and 4: the midpoint is shared exactly half and half; a point at
    -3 belongs to the first with odds e^20 (hand-computed from the two squared distances)."""
    from matplotlib.colors import to_rgb
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [4.0, 0.0]],
                                                    np.eye(2)[None].repeat(2, 0))
    X = np.array([[-3.0, 0.0], [2.0, 0.0], [7.0, 0.0]])
    c0, c1 = np.array(to_rgb(plot.COLOURS[0])), np.array(to_rgb(plot.COLOURS[1]))
    rgb = plot.responsibility_colours(model, X)
    r = 1 / (1 + np.exp(-20.0))
    np.testing.assert_allclose(rgb, [r * c0 + (1 - r) * c1, (c0 + c1) / 2, r * c1 + (1 - r) * c0], atol=1e-12)
    snap = gmmlib.Snapshot(0, model.weights.numpy(), model.means.numpy(), model.covariances.numpy(), 0.0)
    np.testing.assert_allclose(plot.responsibility_colours(snap, X), rgb, atol=1e-12)
    np.testing.assert_allclose(plot.responsibility_colours(model, X, colors=["C0", "C2"])[1],
                               (np.array(to_rgb("C0")) + np.array(to_rgb("C2"))) / 2, atol=1e-12)
    fig, ax = plt.subplots()
    assert plot.plot_responsibilities(ax, snap, X) is ax
    np.testing.assert_allclose(ax.collections[0].get_facecolors()[:, :3], rgb, atol=1e-12)
    plt.close(fig)


def test_responsibility_colours_default_to_the_colour_blind_safe_cycle():
    """No red/lime: the default palette is Okabe and Ito's (blue, orange, bluish green, ...),
    written out here from their paper's RGB values."""
    from matplotlib.colors import to_rgb
    means = [[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]]
    model = gmmlib.GaussianMixture.from_parameters([1 / 3] * 3, means, np.eye(2)[None].repeat(3, 0))
    rgb = plot.responsibility_colours(model, np.array(means))  # each point owned outright
    okabe_ito = np.array([[0, 114, 178], [230, 159, 0], [0, 158, 115]]) / 255
    np.testing.assert_allclose(rgb, okabe_ito, atol=1e-12)
    assert not any(np.allclose(c, to_rgb(bad)) for c in rgb for bad in ("red", "lime"))


def test_plot_responsibilities_sizes_points_by_their_largest_responsibility_and_keys_colours():
    """size_by_max: area s * max_k r_nk (1/2 at the midpoint of two equal components, ~1 far
    from it); key: one legend entry per component, in its colour."""
    from matplotlib.colors import to_rgb
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [4.0, 0.0]],
                                                    np.eye(2)[None].repeat(2, 0))
    X = np.array([[-3.0, 0.0], [2.0, 0.0], [7.0, 0.0]])
    fig, ax = plt.subplots()
    assert plot.plot_responsibilities(ax, model, X, s=20, size_by_max=True, key=True) is ax
    np.testing.assert_allclose(ax.collections[0].get_sizes(), [20, 10, 20], atol=1e-6)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["component 1", "component 2"]
    handles = legend.legend_handles
    np.testing.assert_allclose([h.get_facecolor()[0][:3] for h in handles],
                               [to_rgb(plot.COLOURS[0]), to_rgb(plot.COLOURS[1])], atol=1e-12)
    plt.close(fig)
    fig, ax = plt.subplots()
    plot.plot_responsibilities(ax, model, X, s=20)  # the defaults: equal sizes, no legend
    assert ax.get_legend() is None and np.allclose(ax.collections[0].get_sizes(), 20)
    plt.close(fig)


def test_plot_fit_contours_sit_at_quantiles_of_the_data_and_label_the_axes():
    """The contour levels are the 5 % and 50 % quantiles of the data's own log-densities, so
    they enclose 95 % and 50 % of the points; x₁/x₂ (or the chosen dims) label the axes."""
    X, labels, truth = gmmlib.generate_data(300, 3, 2, seed=0)
    fig, ax = plt.subplots()
    plot.plot_fit(ax, truth, X)
    (cs,) = [c for c in ax.collections if hasattr(c, "levels")]
    logp = truth.log_prob(X).detach().numpy()
    np.testing.assert_allclose(cs.levels, np.quantile(logp, [0.05, 0.5]), rtol=1e-10)
    assert [t.get_text() for t in ax.texts] and {t.get_text() for t in ax.texts} <= {"95%", "50%"}
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x₁", "x₂")
    plt.close(fig)
    X4, _, truth4 = gmmlib.generate_data(200, 2, 4, seed=0)
    fig, ax = plt.subplots()
    plot.plot_fit(ax, truth4, X4, dims=(1, 3), quantiles=(0.1, 0.5, 0.9), n=40)
    (cs,) = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(cs.levels) == 3 and (ax.get_xlabel(), ax.get_ylabel()) == ("x₂", "x₄")
    plt.close(fig)


def test_plot_fit_draws_a_snapshot_and_a_heatmap():
    X, labels, truth = gmmlib.generate_data(200, 3, 2, seed=0)
    snap = gmmlib.Snapshot(0, truth.weights.numpy(), truth.means.numpy(), truth.covariances.numpy(), 0.0)
    fig, axes = plt.subplots(1, 2)
    assert plot.plot_fit(axes[0], snap, X, n=30) is axes[0]
    assert plot.plot_fit(axes[1], truth, X, kind="heatmap", n=30) is axes[1]
    assert len(axes[1].images) == 1 and axes[1].get_xlabel() == "x₁"
    plt.close(fig)


def test_plot_density_colour_bar_is_labelled_and_shares_a_scale():
    model = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0]], np.eye(2)[None])
    fig, axes = plt.subplots(1, 2)
    plot.plot_density(axes[0], model, xlim=(-3, 3), ylim=(-3, 3), n=20, colorbar=True,
                      vmin=0.0, vmax=0.2)
    plot.plot_density(axes[1], model, xlim=(-3, 3), ylim=(-3, 3), n=20, kind="contour",
                      colorbar=True)
    assert len(fig.axes) == 4  # two panels and two colour bars
    assert fig.axes[2].get_ylabel() == "p(x)" and fig.axes[3].get_ylabel() == "log p(x)"
    assert axes[0].images[0].get_clim() == (0.0, 0.2)
    plt.close(fig)


def test_steps_to_is_the_first_step_within_the_gap():
    h = gmmlib.FitHistory(loss=[5.0, 3.2, 3.0015, 3.0009, 3.0002])
    assert h.steps_to(3.0) == 3 and h.steps_to(3.0, gap=1e-2) == 2 and h.steps_to(3.0, gap=1e-4) is None
    assert h.steps_to(6.0) == 0


def test_plot_helpers_name_bad_dims():
    model = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0, 0.0]], np.eye(3)[None])
    one = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0]], np.eye(1)[None])
    fig, ax = plt.subplots()
    for call, match in [(lambda: plot.plot_ellipses(ax, model, dims=(0, 3)), r"dims must be two different feature indices in 0..2"),
                        (lambda: plot.plot_density(ax, model, dims=(1, 1)), "two different"),
                        (lambda: plot.plot_data(ax, np.zeros((5, 1))), "one feature has no 2-D picture"),
                        (lambda: plot.plot_fit(ax, one, np.zeros((5, 1))), "one feature has no 2-D picture")]:
        with pytest.raises(ValueError, match=match):
            call()
    plt.close(fig)


def test_ellipse_of_a_bad_covariance_is_named():
    with pytest.raises(ValueError, match="positive-definite 2x2"):
        plot.ellipse_points([0, 0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="positive-definite|finite"):
        plot.ellipse_points([0, 0], [[np.nan, 0.0], [0.0, 1.0]])


def test_plot_helpers_name_bad_grid_sizes_and_short_colour_lists():
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [3.0, 0.0]], np.eye(2)[None].repeat(2, 0))
    fig, ax = plt.subplots()
    for call, match in [(lambda: plot.density_grid(model, (-1, 1), (-1, 1), n=0), "n must be a positive integer"),
                        (lambda: plot.plot_ellipses(ax, model, colors=["red"]), "colors has 1 entries for 2"),
                        (lambda: plot.responsibility_colours(model, np.zeros((3, 2)), colors=["red"]), "one per component"),
                        (lambda: plot.plot_fit(ax, model, np.zeros((5, 1))), "one feature")]:
        with pytest.raises(ValueError, match=match):
            call()
    plt.close(fig)


@pytest.mark.parametrize("args,flag", [
    (["--device", "foo"], "--device 'foo'"), (["--device", "cuda:abc"], "--device 'cuda:abc'"),
    (["--save", "/nonexistent/dir/m.pt"], "--save"), (["--save", "."], "--save"),
    (["--plot", "/nonexistent/dir/fit.png"], "--plot"), (["--seed", "-1"], "--seed"),
    (["--device", "meta"], "--device 'meta'"), (["--device", "mps"], "--device 'mps'"),
    (["--plot", "fit.xyz"], "--plot fit.xyz: matplotlib cannot write .xyz files"),
])
def test_bad_device_paths_and_seed_exit_2_in_one_line_before_fitting(args, flag, capsys):
    """A device torch cannot parse, a --save path in no directory and a negative seed ended in
    a traceback (RuntimeError, exit 1), --save only after the whole fit; now each is one line
    naming its flag, exit 2, before anything is fitted."""
    assert cli.main(["--samples", "50", "--iterations", "2", "--no-progress", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # nothing fitted, nothing printed
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {flag}") and "Traceback" not in out.err


@pytest.mark.parametrize("args", [["--samples", str(10**20)], ["--dims", str(10**11)],
                                  ["--samples", str(2 * 10**6), "--dims", str(10**6)]])
def test_sizes_no_machine_holds_exit_2_in_one_line(args, capsys):
    """--samples 1e20 reached torch's 'Overflow when unpacking long long' (no flag named),
    --dims 1e11 numpy's _ArrayMemoryError traceback (exit 1)."""
    assert cli.main(["--iterations", "1", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --samples") and "values" in err[0]


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 1.5 TiB"),
                                   RuntimeError("DefaultCPUAllocator: can't allocate memory")])
def test_data_or_a_model_too_large_for_memory_exit_2_in_one_line(error, monkeypatch, capsys):
    """Sizes under the bound that this machine still cannot hold (--samples 1e11 tried to
    allocate 800 GB): numpy's and torch's allocation errors end as one line naming the flags,
    not a traceback. (Raised here by a stand-in: a real allocation that large could succeed
    lazily where memory is overcommitted, and be killed.) Other RuntimeErrors still propagate."""
    def too_large(*args, **kwargs):
        raise error
    monkeypatch.setattr(gmmlib.data, "generate_data", too_large)
    assert cli.main(["--samples", "50", "--iterations", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit in memory" in err[0] and "--samples" in err[0]
    for other in ("something else", "The tensor has a non-zero number of elements, but its data "
                  "is not allocated yet."):  # a bug, not a size: seen whole
        monkeypatch.setattr(gmmlib.data, "generate_data", lambda *a, _m=other, **k: (
            _ for _ in ()).throw(RuntimeError(_m)))
        with pytest.raises(RuntimeError, match="something else|not allocated yet"):
            cli.main(["--samples", "50", "--iterations", "1", "--no-progress"])


def test_plot_format_is_refused_before_the_fit_and_save(tmp_path, capsys):
    """--plot fit.xyz was refused by matplotlib only after the whole fit, and after --save had
    written its file; now before either, exit 2."""
    save = tmp_path / "m.pt"
    args = ["--samples", "50", "--iterations", "2", "--no-progress", "--save", str(save)]
    assert cli.main(args + ["--plot", str(tmp_path / "fit.xyz")]) == 2
    assert not save.exists() and "matplotlib cannot write .xyz" in capsys.readouterr().err


def test_plot_path_without_extension_reports_the_png_it_writes(tmp_path, capsys):
    """matplotlib appends .png to a path without an extension; the CLI said it wrote the path
    as given, a file that does not exist."""
    assert cli.main(["--samples", "50", "--iterations", "2", "--no-progress", "--plot",
                     str(tmp_path / "fit")]) == 0
    assert f"wrote {tmp_path / 'fit.png'}" in capsys.readouterr().out
    assert (tmp_path / "fit.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "fit").exists()


SMALL = ["--samples", "60", "--components", "2", "--iterations", "5", "--no-progress"]
HAS_PROC = os.path.isdir("/proc/self")  # Linux: a directory where no file can be created


def _refused_before_fitting(capsys, args, flag):
    """cli.main(args) exits 2 with one line starting ``error: {flag}``, having printed (so
    fitted) nothing."""
    assert cli.main([*SMALL, *args]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert out.out == "", out.out  # nothing fitted, nothing printed
    assert len(err) == 1 and err[0].startswith(f"error: {flag}"), out.err
    return err[0]


@pytest.mark.parametrize("save,match", [
    ("{tmp}/new.pt/", "ends with a path separator"),  # torch.save: "invalid file name"
    pytest.param("/proc/m.pt", "no file can be created in /proc",  # torch.save: "open file failed"
                 marks=pytest.mark.skipif(not HAS_PROC, reason="needs Linux's /proc")),
])
def test_save_paths_torch_save_cannot_open_are_refused_before_the_fit(save, match, tmp_path, capsys):
    """Both passed the old up-front check (the parent exists) and ended, after the whole fit,
    in torch.save's RuntimeError traceback, exit 1."""
    save = save.format(tmp=tmp_path)
    line = _refused_before_fitting(capsys, ["--save", save], f"--save {save}")
    assert match in line and list(tmp_path.iterdir()) == []


def test_a_failing_torch_save_is_one_line_naming_save(tmp_path, capsys, monkeypatch):
    """What no up-front check foresees (a full disk, ...): torch.save's RuntimeError was a
    traceback; now `error: --save PATH: ...`, exit 2."""
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:747] . open file failed\nmore")
    monkeypatch.setattr(torch, "save", fail)
    save = tmp_path / "m.pt"
    assert cli.main([*SMALL, "--save", str(save)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --save {save}: torch.save could not write it")
    assert "open file failed" in err[0]


@pytest.mark.skipif(__import__("shutil").which(plt.rcParams["pgf.texsystem"]) is not None,
                    reason="LaTeX is installed: .pgf can be written here")
def test_pgf_without_latex_is_refused_before_the_fit_and_save(tmp_path, capsys):
    """--plot fit.pgf: matplotlib's RuntimeError ('xelatex' not found) came after the fit, as a
    traceback, and after --save had written its file."""
    save, pgf = tmp_path / "m.pt", tmp_path / "fit.pgf"
    line = _refused_before_fitting(capsys, ["--save", str(save), "--plot", str(pgf)], f"--plot {pgf}")
    assert "LaTeX" in line and ".pdf or .svg" in line
    assert list(tmp_path.iterdir()) == []


def test_a_failing_figure_is_one_line_naming_plot_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """Any error while matplotlib encodes the picture is `error: --plot PATH: ...`, exit 2; the
    picture is encoded before --save writes, so neither file is left."""
    from matplotlib.figure import Figure

    def fail(self, *args, **kwargs):
        raise RuntimeError("'xelatex' not found; install it")
    monkeypatch.setattr(Figure, "savefig", fail)
    save, png = tmp_path / "m.pt", tmp_path / "fit.png"
    assert cli.main([*SMALL, "--save", str(save), "--plot", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --plot {png}: matplotlib could not draw it")
    assert "xelatex" in err[0] and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not HAS_PROC, reason="needs Linux's /proc")
def test_plot_to_a_directory_that_takes_no_files_is_refused_before_the_fit_and_save(tmp_path, capsys):
    """--plot /proc/fit.png said `error: [Errno 2] No such file or directory` without naming
    --plot, after the fit, with --save's file already written."""
    save = tmp_path / "m.pt"
    line = _refused_before_fitting(capsys, ["--save", str(save), "--plot", "/proc/fit.png"],
                                   "--plot /proc/fit.png")
    assert "writable directory" in line and not save.exists()


@pytest.mark.parametrize("plot", ["same.png", "same"])  # "same" is written as same.png
def test_save_and_plot_to_the_same_file_are_refused(plot, tmp_path, capsys):
    """The figure silently overwrote the model (exit 0)."""
    save = tmp_path / "same.png"
    line = _refused_before_fitting(capsys, ["--save", str(save), "--plot", str(tmp_path / plot)],
                                   "--save and --plot both name")
    assert "two different paths" in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--save", "--plot"])
def test_empty_save_and_plot_paths_are_refused(flag, capsys):
    """--save '' and --plot '' were ignored: exit 0, nothing written."""
    line = _refused_before_fitting(capsys, [flag, ""], f"{flag} '': an empty path")
    assert "leave " + flag + " out" in line


@pytest.mark.parametrize("args,flag", [
    (["--samples", "0"], "--samples must be a positive integer"),
    (["--components", "0"], "--components must be a positive integer"),
    (["--dims", "-1"], "--dims must be a positive integer"),
    (["--samples", "3", "--components", "5"], "--samples 3 is fewer than --components 5"),
    (["--samples", "3", "--components", "5", "--method", "em"], "--samples 3 is fewer"),
    (["--seed", str(2 ** 64)], "--seed must be an integer in [0, 2**64)"),
    (["--save", "a" * 300 + ".pt"], "--save " + "a" * 300 + ".pt: not a usable file path"),
])
def test_data_sizes_seed_and_unusable_names_are_refused_by_flag(capsys, args, flag):
    """These were refused (exit 2) but in the library's words (n_samples, n_components,
    n_features, "generator seed") or, for a name too long for the file system, as a bare
    OSError ("[Errno 36] File name too long"): now by the flag, before the fit."""
    _refused_before_fitting(capsys, args, flag)


def test_plot_without_an_extension_may_name_a_directory(tmp_path, monkeypatch, capsys):
    """--plot PATH writes PATH.png when PATH has no extension; with a directory PATH beside
    it, `--plot fit` was refused as naming a directory, though fit.png is what it writes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fit").mkdir()
    assert cli.main([*SMALL, "--plot", "fit"]) == 0
    assert (tmp_path / "fit.png").stat().st_size > 0 and "wrote fit.png" in capsys.readouterr().out
    _refused_before_fitting(capsys, ["--plot", "fit/"], "--plot fit/: ends with a path separator")


def test_visualize_without_a_window_is_refused_before_fitting(capsys, monkeypatch):
    """--visualize where matplotlib draws no window (Agg, as it picks with no display) fitted,
    showed nothing and exited 0. An interactive backend passes the check."""
    import matplotlib
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "agg")
    line = _refused_before_fitting(capsys, ["--visualize"], "--visualize opens a window")
    assert "--plot fit.png" in line and "'agg'" in line
    assert not cli._has_window()
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "TkAgg")
    assert cli._has_window()


def test_visualize_with_plot_without_a_window_writes_the_file_and_says_so(tmp_path, capsys,
                                                                          monkeypatch):
    """The same command line on a desktop and on a headless runner: with --plot, a missing
    window is a warning, not an error (refusing it broke such scripts on CI)."""
    import matplotlib
    monkeypatch.setattr(matplotlib, "get_backend", lambda: "agg")
    png = tmp_path / "fit.png"
    assert cli.main([*SMALL, "--visualize", "--plot", str(png)]) == 0
    err = capsys.readouterr().err
    assert png.stat().st_size > 0
    assert "warning: --visualize: matplotlib's backend 'agg' draws no window" in err
    assert f"the figure is in {png}" in err
    noext = tmp_path / "fit"  # written as fit.png: the warning names the file there is
    assert cli.main([*SMALL, "--visualize", "--plot", str(noext)]) == 0
    assert f"the figure is in {noext}.png" in capsys.readouterr().err


def test_cuda_without_a_gpu_names_device(capsys, monkeypatch):
    """Every --device error starts with --device; this one began `error: device device(type=...`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _refused_before_fitting(capsys, ["--device", "cuda"], "--device 'cuda' needs CUDA")
    assert "use --device cpu" in line


@pytest.mark.parametrize("args,flag", [
    (["--method", "em", "--mixture_lr", "-1", "--component_lr", "nan"],
     "--mixture_lr and --component_lr are for --method gd"),
    (["--method", "em", "--component_lr", "0.1"], "--component_lr is for --method gd"),
    (["--component_lr", "nan"], "--component_lr must be a positive finite number, got nan"),
    (["--mixture_lr", "inf"], "--mixture_lr must be a positive finite number, got inf"),
])
def test_learning_rates_are_refused_with_em_and_checked_with_gd(args, flag, capsys):
    """EM silently took any learning rate, even -1 and nan, while it refused --batch_size; gd's
    own check did not name the flag (`component_lr must be ...`)."""
    _refused_before_fitting(capsys, args, flag)


def test_family_takes_scikit_learns_names(capsys):
    """--family diag / spherical: argparse's invalid choice, though the library takes them."""
    for alias, name in gmmlib.families.ALIASES.items():
        assert cli.main([*SMALL, "--family", name]) == 0
        expected = capsys.readouterr().out.splitlines()[-1].split("(")[0]
        assert cli.main([*SMALL, "--family", alias]) == 0
        assert capsys.readouterr().out.splitlines()[-1].split("(")[0] == expected
    assert cli.build_parser().parse_args(["--family", "diag"]).family == "diagonal"
    usage = cli.build_parser().format_help()  # the choices stay gmmlib's, the aliases in the help
    assert "{full,tied,diagonal,isotropic,shared_isotropic,constant}" in usage
    assert "diag for diagonal" in " ".join(usage.split())


def test_distributed_with_fewer_samples_than_ranks_names_samples(capsys, monkeypatch):
    """torchrun --nproc_per_node 2 ... --samples 1: rank 1's share was empty and the error said
    `X is empty: found array with 0 sample(s)`. _join is stubbed as rank 1 of 2 (no process group
    is started, so none is torn down)."""
    monkeypatch.setattr(cli, "_join", lambda device: (1, 2))
    assert cli.main(["--distributed", "--samples", "1", "--components", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --samples 1 is fewer than the 2 ranks: every rank keeps a share of the "
                   "rows; pass --samples 2 or more, or start fewer processes"]


def test_radius_is_capped_where_the_noise_stays_resolvable(capsys):
    """--radius 1e20 printed an NLL of 5e11 (the unit-variance noise lost next to the means);
    the cap, 1e8, still fits to the generating mixture's NLL."""
    line = _refused_before_fitting(capsys, ["--radius", "1e20", "--method", "em"], "--radius must be at most 1e8")
    assert "got 1e+20" in line
    _refused_before_fitting(capsys, ["--radius", "0"], "--radius must be a positive finite number")
    assert cli.main(["--samples", "200", "--components", "2", "--method", "em", "--radius", "1e8",
                     "--no-progress"]) == 0
    final = capsys.readouterr().out.splitlines()[-1]
    fitted, true = float(final.split("final mean NLL ")[1].split()[0]), float(final.split(": ")[-1])
    assert abs(fitted - true) < 0.2


def test_em_logs_iterations_and_counts_are_pluralised(capsys):
    """EM printed `step N` lines above `after N iterations`, and `after 1 iterations`."""
    assert cli.main([*SMALL[:4], "--iterations", "1", "--no-progress", "--method", "em",
                     "--log_freq", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("iteration      1  mean NLL") and " after 1 iteration (" in out[-1]
    assert cli.main([*SMALL[:4], "--iterations", "1", "--no-progress", "--log_freq", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("step      1  mean NLL") and " after 1 step (" in out[-1]


def _two_blobs():
    return gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [4.0, 0.0]],
                                                  np.eye(2)[None].repeat(2, 0))


def test_plot_ellipses_passes_line_keywords_to_every_ellipse():
    """Only lw reached the lines; colour, alpha, label, zorder, linestyle were dropped."""
    from matplotlib.colors import to_rgba
    fig, ax = plt.subplots()
    plot.plot_ellipses(ax, _two_blobs(), linewidth=5, color="red", alpha=0.2, label="truth",
                       zorder=10, linestyle=":")
    ellipses = [ln for ln in ax.lines if ln.get_marker() != "x"]
    means = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(ellipses) == 4 and len(means) == 2  # 1 and 2 sigma of two components
    for ln in ellipses:
        assert (ln.get_linewidth(), ln.get_linestyle(), ln.get_alpha(), ln.get_zorder()) == (5, ":", 0.2, 10)
        assert to_rgba(ln.get_color()) == to_rgba("red")
    assert all(to_rgba(ln.get_color()) == to_rgba("red") and ln.get_zorder() == 10 for ln in means)
    assert ax.get_legend_handles_labels()[1] == ["truth"]  # labelled once, not per ellipse
    plt.close(fig)
    fig, ax = plt.subplots()  # the aliases, with the colors argument and the default styles
    plot.plot_ellipses(ax, _two_blobs(), colors=["C1", "C2"], lw=3)
    ellipses = [ln for ln in ax.lines if ln.get_marker() != "x"]
    assert [ln.get_linewidth() for ln in ellipses] == [3] * 4
    assert [ln.get_color() for ln in ellipses] == ["C1", "C1", "C2", "C2"]
    assert [ln.get_linestyle() for ln in ellipses] == ["-", "--", "-", "--"]
    plt.close(fig)


def test_scatter_keywords_override_the_defaults():
    """plot_data and plot_responsibilities hard-coded c= and linewidths=0: color=, c= and
    linewidths= were matplotlib errors; contours with colors= clashed with the default cmap."""
    from matplotlib.colors import to_rgba
    model, X = _two_blobs(), np.array([[-1.0, 0.0], [2.0, 0.0], [5.0, 0.0]])
    for call in (lambda ax: plot.plot_data(ax, X, color="red"), lambda ax: plot.plot_data(ax, X, c="red"),
                 lambda ax: plot.plot_data(ax, X, [0, 1, 1], color="red"),
                 lambda ax: plot.plot_responsibilities(ax, model, X, color="red")):
        fig, ax = plt.subplots()
        call(ax)
        np.testing.assert_allclose(ax.collections[0].get_facecolors()[:, :3], [to_rgba("red")[:3]] * 1)
        assert list(ax.collections[0].get_linewidths()) == [0]  # the other default stays
        plt.close(fig)
    fig, ax = plt.subplots()
    plot.plot_data(ax, X, linewidths=1.5)
    plot.plot_responsibilities(ax, model, X, linewidths=2)
    assert [list(c.get_linewidths()) for c in ax.collections] == [[1.5], [2]]
    plt.close(fig)
    fig, ax = plt.subplots()
    plot.plot_density(ax, model, X, kind="contour", colors="k", n=30)
    (cs,) = ax.collections
    np.testing.assert_allclose(cs.get_edgecolor()[:, :3], 0.0)  # every level black
    plt.close(fig)


def test_plot_loss_refuses_an_unknown_x():
    """x="steps" plotted against time and labelled the axis "seconds"."""
    h = gmmlib.FitHistory(loss=[3.0, 2.0, 1.5], time=[0.0, 0.1, 0.2])
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="x must be 'step' or 'time'.*got 'steps'"):
        plot.plot_loss(ax, h, x="steps")
    assert not ax.lines
    plot.plot_loss(ax, h, x="time")
    assert ax.get_xlabel() == "seconds" and list(ax.lines[0].get_xdata()) == [0.0, 0.1, 0.2]
    plt.close(fig)


def test_heatmap_pixels_are_centred_on_the_grid_points():
    """density_grid evaluates at linspace(lo, hi, n), the pixel centres; the extent treated
    lo and hi as pixel edges, shifting the picture by half a pixel. The brightest pixel of a
    Gaussian at the origin must be centred on the origin."""
    model = gmmlib.GaussianMixture.from_parameters([1.0], [[0.0, 0.0]], np.eye(2)[None])
    fig, ax = plt.subplots()
    plot.plot_density(ax, model, xlim=(-1, 3), ylim=(-2, 2), n=5)
    (im,) = ax.images
    A, (x0, x1, y0, y1) = im.get_array(), im.get_extent()
    i, j = np.unravel_index(np.argmax(A), A.shape)
    assert (x0 + (j + 0.5) * (x1 - x0) / A.shape[1], y0 + (i + 0.5) * (y1 - y0) / A.shape[0]) == (0.0, 0.0)
    assert (x0, x1, y0, y1) == (-1.5, 3.5, -2.5, 2.5)
    assert ax.get_xlim() == (-1, 3) and ax.get_ylim() == (-2, 2)  # the view is still the limits
    plt.close(fig)


def test_plot_density_takes_limits_as_arrays_and_refuses_nan_data_before_drawing():
    model = _two_blobs()
    fig, ax = plt.subplots()
    plot.plot_density(ax, model, np.zeros((3, 2)), xlim=np.array([-10.0, 10.0]), n=10)
    assert ax.get_xlim() == (-10, 10)
    plot.plot_density(ax, model, ylim=torch.tensor([-1.0, 1.0]), n=10)
    assert ax.get_ylim() == (-1, 1)
    with pytest.raises(ValueError, match="xlim must be \\(low, high\\)"):
        plot.plot_density(ax, model, xlim=(0, 1, 2))
    plt.close(fig)
    X = np.array([[0.0, 0.0], [np.nan, 1.0], [4.0, 0.0]])
    for call in (lambda ax: plot.plot_density(ax, model, X), lambda ax: plot.plot_fit(ax, model, X, kind="heatmap")):
        fig, ax = plt.subplots()
        with pytest.raises(ValueError, match="Input X contains NaN in 1 row"):
            call(ax)
        assert not ax.images and not ax.collections  # refused before drawing anything
        plt.close(fig)


def test_ellipse_points_refuse_bad_shapes_asymmetry_and_nan_means():
    for mean, cov, match in [([0, 0], np.eye(3), r"cov must be a 2x2 covariance matrix, got shape \(3, 3\)"),
                             ([0, 0], [[1.0]], r"got shape \(1, 1\)"),
                             ([0, 0], [[1.0, 0.9], [0.0, 1.0]], "cov must be symmetric"),
                             ([np.nan, 0], np.eye(2), "mean must be two finite numbers"),
                             ([0, 0, 0], np.eye(2), "mean must be two finite numbers")]:
        with pytest.raises(ValueError, match=match):
            plot.ellipse_points(mean, cov)
    # rounding-level asymmetry (a float32 covariance) still draws
    cov = np.array([[2.0, 0.6], [0.6 * (1 + 1e-7), 0.5]], dtype=np.float32)
    assert plot.ellipse_points([0, 0], cov).shape == (100, 2)


def test_plot_data_names_one_dimensional_x():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(5,\)"):
        plot.plot_data(ax, np.zeros(5))
    plt.close(fig)


def test_plot_selection_names_short_colours_and_takes_one_criterion_by_name():
    X, _, _ = gmmlib.generate_data(60, 2, 2, seed=0)
    sel = gmmlib.select_model(X, [1, 2], ["full", "diagonal"], generator=0, max_iter=5)
    fig, axes = plt.subplots(1, 2)
    with pytest.raises(ValueError, match="colors has 1 entries for 2 covariance families; pass one per covariance family"):
        plot.plot_selection(axes, sel, colors=["k"])
    assert plot.plot_selection(axes[0], sel, criteria="bic") == [axes[0]]  # not ["b", "i", "c"]
    assert axes[0].get_ylabel() == "BIC"
    plt.close(fig)


def test_plot_data_names_labels_of_the_wrong_length_or_kind():
    """labels of another length or NaN labels gave matplotlib's or NumPy's error."""
    import matplotlib.pyplot as plt
    X = np.random.default_rng(0).normal(size=(5, 2))
    fig, ax = plt.subplots()
    try:
        for labels in ([0, 1], np.array([0, 1, np.nan, 0, 1])):
            with pytest.raises(ValueError, match="labels must be 5 whole numbers, one per row of X"):
                gmmlib.plot.plot_data(ax, X, labels)
        for labels in ([0, 1, 2, 0, 1], np.array([0.0, 1.0, 2.0, 0.0, 1.0]), torch.tensor([0, 1, 2, 0, 1])):
            assert gmmlib.plot.plot_data(ax, X, labels) is ax
    finally:
        plt.close(fig)


@pytest.mark.parametrize("where", ["loc", "logits", "raw_scale"])
def test_plot_helpers_name_a_model_whose_parameters_are_not_numbers(where):
    """NaN in the means gave 'xlim must be (low, high) ... got (nan, nan)' for limits the user
    never passed (plot_density) or matplotlib's 'Axis limits cannot be NaN' (plot_fit); NaN in
    the logits a blank heat map with no error; NaN limits to density_grid an all-NaN grid."""
    model = gmmlib.GaussianMixture.from_parameters([0.5, 0.5], [[0.0, 0.0], [2.0, 1.0]],
                                                   torch.eye(2).expand(2, 2, 2), "full")
    ok = plot.density_grid(model, (-1, 1), (-1, 1), n=5)[2]
    assert np.isfinite(ok).all()
    with pytest.raises(ValueError, match="xlim must be"):
        plot.density_grid(model, (math.nan, 1.0), (0.0, 1.0), n=5)
    with torch.no_grad():
        getattr(model, where).view(-1)[0] = math.nan
    fig, ax = plt.subplots()
    try:
        for call in (lambda: plot.plot_density(ax, model, n=10),
                     lambda: plot.plot_fit(ax, model, torch.zeros(3, 2)),
                     lambda: plot.density_grid(model, (-1, 1), (-1, 1), n=5)):
            with pytest.raises(ValueError, match="hold NaN or infinity; there is no density"):
                call()
    finally:
        plt.close(fig)
