"""Training runs and grids of them: the trainer and its parts (optimizer, resume rules, the final test, checkpoint
averaging, W&B tracking), run folders and their locks, data-parallel plumbing, random search, finished runs,
the grid runner with its deadline and compute plan, and the release of a trained model.

Commands: ``s2s-train``, ``s2s-grid``, ``s2s-average``, ``s2s-release``."""
