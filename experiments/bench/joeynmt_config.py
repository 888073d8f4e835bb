"""JoeyNMT's config for our composed config: the same data, vocabulary, model sizes, optimizer and batch budget.

What cannot be matched is returned as notes, which the report prints beside
JoeyNMT's numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.bench.targets import JOEYNMT_VERSION
from experiments.core.errors import UserError


def joey_config(cfg: DictConfig, paths: dict[str, Any], *, model_dir: Path, steps: int, log_every: int,
                use_cuda: bool) -> tuple[dict[str, Any], list[str]]:
    """JoeyNMT's config for our composed ``cfg``, and notes on what could not be matched."""
    m, tc, task = cfg.model, cfg.trainer, cfg.task
    kind = str(m.name)
    notes: list[str] = []
    side = lambda: {  # noqa: E731 - a fresh dict per side keeps YAML anchors out of the file
        "max_length": None, "lowercase": False, "normalize": False, "level": "bpe",
        "voc_limit": paths["vocab_size"], "voc_min_freq": 1, "voc_file": paths["vocab"],
        "tokenizer_type": "sentencepiece",
        "tokenizer_cfg": {"model_file": paths["sp_model"], "pretokenizer": "none"},
    }
    data = {
        "train": paths["stems"]["train"], "dev": paths["stems"]["valid"], "dataset_type": "plain",
        "src": {**side(), "lang": paths["src_lang"], "max_length": int(task.max_src_len)},
        "trg": {**side(), "lang": paths["tgt_lang"], "max_length": int(task.max_tgt_len)},
        "special_symbols": {"unk_token": "<unk>", "unk_id": 0, "pad_token": "<pad>", "pad_id": 1,
                            "bos_token": "<s>", "bos_id": 2, "eos_token": "</s>", "eos_id": 3},
    }
    if "test" in paths["stems"]:
        data["test"] = paths["stems"]["test"]
    notes.append(f"max_length {task.max_src_len}/{task.max_tgt_len}: JoeyNMT drops longer training pairs, "
                 "we truncate them")

    training: dict[str, Any] = {
        "optimizer": "adamw", "normalization": "tokens", "adam_betas": [float(b) for b in tc.betas],
        "learning_rate": float(tc.lr), "learning_rate_min": 1.0e-10, "weight_decay": float(tc.weight_decay),
        "label_smoothing": float(tc.label_smoothing), "loss": "crossentropy",
        "batch_size": int(tc.batch_tokens), "batch_type": "token", "batch_multiplier": int(tc.accum_steps),
        "early_stopping_metric": "bleu", "epochs": 1000, "updates": int(steps),
        "logging_freq": int(log_every), "validation_freq": int(log_every) * (steps // log_every + 10),
        "overwrite": True, "shuffle": True, "print_valid_sents": [], "keep_best_ckpts": 1, "num_workers": 0,
    }
    if tc.clip_norm > 0:
        training["clip_grad_norm"] = float(tc.clip_norm)
    # JoeyNMT's warmupinversesquareroot is our inverse_sqrt exactly (linear warm-up, then peak * sqrt(warmup / step));
    # for our constant and plateau schedules it matches the warm-up only (JoeyNMT has no constant schedule, and
    # its plateau passes verbose= to ReduceLROnPlateau, which this torch rejects).
    training.update(scheduling="warmupinversesquareroot", learning_rate_warmup=int(tc.warmup_steps))
    schedule = str(tc.schedule.value)
    if schedule != "inverse_sqrt":
        notes.append(f"schedule {schedule} with {tc.warmup_steps} warm-up steps: JoeyNMT runs warmupinversesquareroot "
                     f"with the same warm-up, identical for the first {tc.warmup_steps} updates (it decays after "
                     "them, ours does not)")
    notes.append(f"batches: {tc.batch_tokens}-token budget both; JoeyNMT's are unsorted random batches closed "
                 "once n x longest >= the budget, ours sorted by length and kept within it")
    notes.append("validation pushed past the last update; learning_rate_min 1e-10 so that the warm-up's small "
                 "lr does not end training; fp16 off (fp32 both)")

    init = {"initializer": "xavier_uniform", "bias_initializer": "zeros", "init_gain": 1.0}
    if kind == "transformer":
        layer = {"num_heads": int(m.heads), "hidden_size": int(m.d_model), "ff_size": int(m.ff_size),
                 "dropout": float(m.dropout), "layer_norm": str(m.norm.value), "activation": "relu",
                 "embeddings": {"embedding_dim": int(m.d_model), "scale": True, "dropout": float(m.dropout)}}
        model = {**init, "embed_initializer": "xavier_uniform", "embed_init_gain": 1.0,
                 "tied_embeddings": bool(m.share_embeddings), "tied_softmax": bool(m.tie_embeddings),
                 "encoder": {"type": "transformer", "num_layers": int(m.enc_layers), **layer},
                 "decoder": {"type": "transformer", "num_layers": int(m.dec_layers), **layer}}
        if str(m.positions.value) != "sinusoidal":
            notes.append(f"positions {m.positions.value}: JoeyNMT has sinusoidal positions only")
        if float(m.attention_dropout) != float(m.dropout):
            notes.append(f"attention dropout {m.attention_dropout}: JoeyNMT applies dropout={m.dropout} to "
                         "attention weights too (no separate setting)")
    elif kind == "gru":
        attention = str(m.attention.value)
        joey_attention = "bahdanau" if attention == "bahdanau" else "luong"
        if attention == "luong_dot":
            notes.append("attention luong_dot: JoeyNMT has bahdanau and luong (general) only; luong used")
        model = {**init, "embed_initializer": "normal", "embed_init_weight": 0.1,
                 "tied_embeddings": bool(m.share_embeddings), "tied_softmax": False,
                 "encoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": int(m.hidden_size) // 2,
                             "bidirectional": True, "num_layers": int(m.enc_layers), "dropout": float(m.dropout),
                             "embeddings": {"embedding_dim": int(m.emb_dim), "scale": False,
                                            "dropout": float(m.dropout)}},
                 "decoder": {"type": "recurrent", "rnn_type": "gru", "hidden_size": int(m.hidden_size),
                             "num_layers": int(m.dec_layers), "dropout": float(m.dropout),
                             "hidden_dropout": float(m.dropout), "input_feeding": bool(m.input_feeding),
                             "init_hidden": "bridge", "attention": joey_attention,
                             "embeddings": {"embedding_dim": int(m.emb_dim), "scale": False,
                                            "dropout": float(m.dropout)}}}
        if m.tie_embeddings:
            notes.append(f"output layer: ours projects the {m.hidden_size}-wide attentional vector to "
                         f"{m.emb_dim} and reuses the embedding; JoeyNMT cannot tie a {m.hidden_size}-wide "
                         f"decoder to {m.emb_dim}-wide embeddings (tied_softmax off): a separate "
                         f"{m.hidden_size} x vocabulary output layer, so more parameters")
        notes.append("bridge: ours maps all final encoder states (every layer) to h0, JoeyNMT the last layer's")
    else:
        raise UserError(f"no JoeyNMT mapping for model {kind!r}")

    config = {
        "name": f"s2s_bench_{kind}", "joeynmt_version": JOEYNMT_VERSION, "model_dir": str(model_dir),
        "use_cuda": use_cuda, "fp16": False, "random_seed": int(cfg.seed),
        "data": data,
        "testing": {"n_best": 1, "beam_size": 5, "beam_alpha": 1.0, "batch_size": int(tc.batch_tokens),
                    "batch_type": "token", "max_output_length": int(task.max_tgt_len), "eval_metrics": ["bleu"],
                    "sacrebleu_cfg": {"tokenize": "13a", "lowercase": False}},
        "training": training,
        "model": model,
    }
    return config, notes
