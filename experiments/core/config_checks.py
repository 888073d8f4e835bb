"""The rules a config must meet beyond its types: ranges, and what one key asks of another.

``config.validate`` applies them at start, so a value that cannot work is one
line naming the key and what to do, before any data is read, never a traceback
at the first update or the first validation. What depends on the data (the
longest example against the batch and position budgets) is checked once the
splits are read, still before the first update: ``experiments/training/preflight.py``.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import ConfigError

AT_LEAST_1 = ("trainer.batch_tokens", "trainer.accum_steps", "trainer.max_steps", "trainer.max_epochs",
              "trainer.eval_every", "trainer.log_every", "trainer.val_beam_size", "decoding.beam_size",
              "decoding.batch_tokens", "decoding.beam_batch_tokens", "task.max_src_len", "task.max_tgt_len",
              "task.tokenizer.max_sentences", "task.num_proc")
# key -> what 0 means (None: nothing special)
AT_LEAST_0 = {"trainer.max_tokens": "no token limit", "trainer.num_threads": "the cores this process may use",
              "trainer.warmup_steps": "no warm-up", "trainer.weight_decay": "none",
              "trainer.keep_checkpoints": "no snapshots",
              "trainer.early_stopping_patience": "off", "trainer.pool_size": "the whole split",
              "trainer.plateau_patience": None, "trainer.min_lr": None, "decoding.min_len": "no minimum",
              "decoding.max_len_a": None, "decoding.max_len_b": None, "logger.samples": "none"}
MODEL_SIZES = {"gru": ("emb_dim", "hidden_size", "enc_layers", "dec_layers"),
               "transformer": ("d_model", "heads", "ff_size", "enc_layers", "dec_layers", "max_positions")}
SPECIAL_PIECES = 4  # pad, unk, bos, eos (experiments/data/tokenizer.py)
SEEDS = 2**32  # numpy takes seeds below this


def check_values(cfg: DictConfig) -> None:
    """Cross-field rules and ranges that types alone cannot express."""
    splits = cfg.task.splits
    for required in ("train", "valid"):
        if required not in splits:
            raise ConfigError(f"task.splits has no {required!r} entry (it has {list(splits)}); add one")
    check_ranges(cfg)
    check_model(cfg.model)
    tc, decoding = cfg.trainer, cfg.decoding
    unknown = [name for name in tc.test_splits if name not in splits or name in ("train", "valid")]
    if unknown:
        raise ConfigError(f"trainer.test_splits names {unknown}, which are not test splits of task {cfg.task.name!r}; "
                          f"its test splits are {[s for s in splits if s not in ('train', 'valid')]}")
    if not 1 <= decoding.n_best <= decoding.beam_size:
        raise ConfigError(f"decoding.n_best={decoding.n_best} must be between 1 and "
                          f"decoding.beam_size={decoding.beam_size}: beam search keeps only that many")
    if decoding.length_penalty_choices and decoding.beam_size == 1:
        raise ConfigError("decoding.length_penalty_choices needs decoding.beam_size > 1: greedy search has no length "
                          "penalty; set a beam size or drop the choices")
    if any(m < 0 for m in decoding.min_len_choices):
        raise ConfigError(f"decoding.min_len_choices={list(decoding.min_len_choices)} must all be 0 (no minimum) "
                          "or more")
    if tc.average_checkpoints > tc.keep_checkpoints:
        raise ConfigError(f"trainer.average_checkpoints={tc.average_checkpoints} must be between 0 (off) "
                          f"and trainer.keep_checkpoints={tc.keep_checkpoints}: keep at least the snapshots "
                          "you average")
    if cfg.model.get("copy") and not cfg.task.tokenizer.joint:
        raise ConfigError("model.copy=true copies source pieces into the output by their ids, so it needs one joint "
                          "vocabulary: set task.tokenizer.joint=true")
    if cfg.task.loader == "hf" and not cfg.task.hf.path:
        raise ConfigError("task.loader=hf needs task.hf.path (a hub name, a local folder, or json/parquet/csv)")
    device = tc.device
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"trainer.device={device!r}; valid: auto, cpu, cuda, cuda:N")


def check_ranges(cfg: DictConfig) -> None:
    for key in AT_LEAST_1:
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} must be at least 1")
    for key, zero in AT_LEAST_0.items():
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} must be 0{f' ({zero})' if zero else ''} or more")
    tc, tokenizer = cfg.trainer, cfg.task.tokenizer
    if not 0 <= cfg.seed < SEEDS:
        raise ConfigError(f"seed={cfg.seed} must be between 0 and 2**32 - 1 (the seeds numpy takes)")
    if tc.lr <= 0:
        raise ConfigError(f"trainer.lr={tc.lr} must be positive")
    if len(tc.betas) != 2 or not all(0.0 <= b < 1.0 for b in tc.betas):
        raise ConfigError(f"trainer.betas={list(tc.betas)} must be two numbers in [0, 1), e.g. "
                          "trainer.betas=[0.9,0.98]")
    if not 0.0 <= tc.label_smoothing < 1.0:
        raise ConfigError(f"trainer.label_smoothing={tc.label_smoothing} must be in [0, 1)")
    if not 0.0 < tc.plateau_factor < 1.0:
        raise ConfigError(f"trainer.plateau_factor={tc.plateau_factor} must be in (0, 1): the lr is multiplied by it")
    if tokenizer.vocab_size <= SPECIAL_PIECES:
        raise ConfigError(f"task.tokenizer.vocab_size={tokenizer.vocab_size} must be more than the "
                          f"{SPECIAL_PIECES} special pieces (pad, unk, bos, eos); subword vocabularies here are "
                          "thousands, e.g. 8000")
    if not 0.0 < tokenizer.character_coverage <= 1.0:
        raise ConfigError(f"task.tokenizer.character_coverage={tokenizer.character_coverage} must be in (0, 1]")


def check_model(model: DictConfig) -> None:
    for key in MODEL_SIZES.get(model.name, ()):
        if model[key] < 1:
            raise ConfigError(f"model.{key}={model[key]} must be at least 1")
    for key in ("dropout", "attention_dropout", "activation_dropout", "embedding_dropout"):
        if model.get(key) is not None and not 0.0 <= model[key] < 1.0:
            raise ConfigError(f"model.{key}={model[key]} must be in [0, 1)")
    if model.name == "transformer" and model.d_model % model.heads:
        divisors = [h for h in range(1, min(model.d_model, 16) + 1) if model.d_model % h == 0]
        raise ConfigError(f"model.heads={model.heads} does not divide model.d_model={model.d_model}: each head takes "
                          f"d_model / heads dimensions; use heads in {divisors} (or another d_model)")
    if model.name == "gru" and model.hidden_size % 2:
        raise ConfigError(f"model.hidden_size={model.hidden_size} must be even: the bidirectional encoder gives "
                          "each direction half of it")
