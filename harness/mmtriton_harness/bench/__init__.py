"""`mmtriton bench`: the served pipeline measured against in-process baselines on one machine."""
