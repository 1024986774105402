"""Data for emvsbayes: bundled data sets, CSV loading and simulation with known truth.

Every source produces one of three frozen records that the model families read:
:class:`CoinData` (heads out of tosses per set), :class:`ContinuousData` (an (N, D) array) and
:class:`CountData` (one count per row, for Poisson models).
"""

from emvsbayes.data.bundled import (
    HEROES_LESSON_OPTIONS,
    DatasetInfo,
    coin_sequences,
    dataset_info,
    list_datasets,
    load_dataset,
)
from emvsbayes.data.csv import load_coins_csv, load_continuous_csv, load_counts_csv
from emvsbayes.data.records import CoinData, ContinuousData, CountData
from emvsbayes.data.simulate import (
    GaussianMixtureParams,
    separated_gaussian_mixture,
    simulate_coins,
    simulate_gaussian_mixture,
)

__all__ = [
    "HEROES_LESSON_OPTIONS",
    "CoinData",
    "ContinuousData",
    "CountData",
    "DatasetInfo",
    "GaussianMixtureParams",
    "coin_sequences",
    "dataset_info",
    "list_datasets",
    "load_coins_csv",
    "load_continuous_csv",
    "load_counts_csv",
    "load_dataset",
    "separated_gaussian_mixture",
    "simulate_coins",
    "simulate_gaussian_mixture",
]
