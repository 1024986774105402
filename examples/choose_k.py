"""How many components? Fit K = 1, 2, 3 to the Old Faithful eruption times and collect the summaries.

Each comparison's ``summary()`` is one table; ``pandas.concat`` stacks them into one DataFrame with K
as the outer index level. EM's BIC (in the results' ``em`` group) is printed for each K.
Run it with ``python examples/choose_k.py``.
"""

import os

import pandas as pd

import emvsbayes

DRAWS = int(os.environ.get("EMVSBAYES_EXAMPLE_DRAWS", "1000"))

faithful = emvsbayes.load_dataset("old_faithful")
eruptions = pd.DataFrame(faithful.x, columns=faithful.columns)[["eruptions"]]

tables, bic = {}, {}
for k in (1, 2, 3):
    comparison = emvsbayes.compare(eruptions, family="gaussian", components=k, chains=2, draws=DRAWS, tune=DRAWS,
                                   seed=k)
    tables[k] = comparison.summary()
    bic[k] = float(comparison.results["em"].attrs["bic"])

summaries = pd.concat(tables, names=["K", "parameter"])
with pd.option_context("display.width", 120, "display.max_columns", 8):
    print(summaries[["em", "post_mean", "post_lower", "post_upper", "rhat"]].round(3))
print("EM's BIC by K (lower is better):", {k: round(v, 1) for k, v in bic.items()})
