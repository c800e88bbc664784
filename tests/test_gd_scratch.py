"""fit_gd is the plain training loop of chapter 2 plus chores: with the guard idle (no resets),
Adam on ``model.nll(X)`` under a cosine schedule, with fit_gd's start, gives the same
parameters to the last bit. The book shows this check; this test keeps it true."""
import pytest
import torch

import gmmlib


def scratch_fit(X, iterations, mixture_lr, component_lr, generator):
    """Chapter 2's from-scratch loop, with one parameter group per learning rate."""
    model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    gmmlib.initialize(model, X, "random_from_data", generator=generator)
    opt = torch.optim.Adam([{"params": [model.logits], "lr": mixture_lr},
                            {"params": [model.loc, model.raw_scale], "lr": component_lr}])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)
    for _ in range(iterations):
        opt.zero_grad()
        model.nll(X).backward()
        opt.step()
        schedule.step()
    return model


@pytest.mark.parametrize("mixture_lr, component_lr", [(0.05, 0.05), (1e-3, 0.05), (0.05, 1e-3)])
def test_fit_gd_is_adam_with_a_cosine_schedule_on_the_mean_nll(mixture_lr, component_lr):
    X = gmmlib.generate_data(300, 3, 2, seed=3).X
    model = gmmlib.GaussianMixture(3, 2, "full", dtype=torch.float64)
    history = gmmlib.fit_gd(model, X, iterations=60, init="random_from_data", generator=0,
                            mixture_lr=mixture_lr, component_lr=component_lr, progress=False)
    assert history.resets == []  # the guard stayed idle, so the arithmetic is the same
    ours = scratch_fit(X, 60, mixture_lr, component_lr, generator=0)
    for name in ("weights", "means", "covariances"):
        torch.testing.assert_close(getattr(ours, name).detach(), getattr(model, name).detach(),
                                   rtol=0, atol=1e-12)
    assert abs(ours.nll(X).item() - history.final_loss) <= 1e-12
