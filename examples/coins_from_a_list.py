"""The lesson's two coins, from a Python list: EM and the posterior in one call.

Five sets of ten tosses, each made with coin A or coin B (which one is not recorded). EM starts from
the lesson's guess theta = (0.5, 0.9); the posterior is sampled with PyMC. Run it with
``python examples/coins_from_a_list.py``; it prints the comparison and writes ``coins.html``.
"""

import os

import emvsbayes

# Sampler length: the tests set EMVSBAYES_EXAMPLE_DRAWS small to run this quickly.
DRAWS = int(os.environ.get("EMVSBAYES_EXAMPLE_DRAWS", "1000"))

# (heads, tosses) of each set
tosses = [(5, 10), (7, 10), (8, 10), (9, 10), (4, 10)]

comparison = emvsbayes.compare(
    tosses,
    family="coins",
    components=2,
    labels=["A", "B"],         # [model] labels: names of the coins in tables and figures
    init=[0.5, 0.9],           # [em] init: the lesson's starting guess (theta_A, theta_B)
    kinds=["soft", "hard"],    # [em] kinds: soft EM (compared with the posterior) and hard EM
    chains=2, draws=DRAWS, tune=DRAWS,
    seed=2026,
)

columns = ["em", "wald_lower", "wald_upper", "post_mean", "post_lower", "post_upper", "rhat"]
print(comparison.summary().loc[["theta[A]", "theta[B]"], columns].round(3))
print("report:", comparison.report("coins.html"))
