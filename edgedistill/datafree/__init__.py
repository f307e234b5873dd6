"""Data-free distillation of classifiers: a generator synthesises the inputs (DAFL, DFAD, BN-statistics matching)."""
