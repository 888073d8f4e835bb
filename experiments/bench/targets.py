"""What the bench compares against: JoeyNMT's reference numbers and the issue's targets.

Constants only, read by the analysis, the time-to-BLEU curves and the plots.
"""

from __future__ import annotations

JOEYNMT_VERSION = "2.3.0"  # the peer measured beside our models (its own virtual environment)

# JoeyNMT 2.3.0 on this project's 2-core CPU machine at 4096-token batches (shared/peers/joeynmt/README.md):
# used for the target ratios when JoeyNMT is not measured in the same run (Multi30k only: elsewhere the
# ratios need --joeynmt).
JOEYNMT_ANCHORS = {"multi30k_de_en": {"transformer": 770.0, "gru": 750.0}}
JOEYNMT_ANCHOR_BATCH_TOKENS = 4096
# Its Transformer's seconds per update on that machine (same README, "about 2.2 s a step"): another machine
# than the bench's, so time to quality only quotes it for orientation, never as a ratio or a verdict.
JOEYNMT_ANCHOR_STEP_S = {"multi30k_de_en": 2.2}

# JoeyNMT 2.3.0's validation BLEU (greedy, sacreBLEU) against updates of 4096-token batches with
# joey_transformer.yaml (shared/peers/joeynmt/README.md). Updates do not depend on the hardware, so this
# curve is the sample-efficiency reference on any machine. Its log rounds each validation to one decimal
# except the best, which it reports exactly (38.86 at update 2500): the time-to-quality threshold.
JOEYNMT_CURVE = {500: 10.5, 1000: 28.6, 1500: 34.8, 2000: 37.4, 2500: 38.86}
JOEYNMT_CURVE_BATCH_TOKENS = 4096  # the batch budget its curve's updates are of
JOEYNMT_BEST = max(JOEYNMT_CURVE.values())  # 38.86, the default of --time-to-quality
# Its real (non-pad) target tokens per update: about 770 tokens/s at about 2.2 s a step on the same
# machine (same README): its unsorted 4096-token batches are about half padding, ours about 3.4k real
# tokens, so equal updates are not equal data. The curve in real target tokens is updates x this.
JOEYNMT_TOKENS_PER_UPDATE = JOEYNMT_ANCHORS["multi30k_de_en"]["transformer"] * JOEYNMT_ANCHOR_STEP_S["multi30k_de_en"]

# The targets, per task (the bench's --task): training speed as a multiple of JoeyNMT's, decoding
# time on a CPU over the whole test split.
TRAIN_TARGETS = {
    # (model, which of ours, minimum ratio to JoeyNMT)
    "multi30k_de_en": [("transformer", "best", 5.0), ("transformer", "fp32", 3.0), ("gru", "best", 3.0)],
    # summarization-length inputs (400-subword dialogues): both models at least twice JoeyNMT's speed
    "samsum": [("transformer", "fp32", 2.0), ("gru", "fp32", 2.0)],
}
DECODE_TARGETS = {"multi30k_de_en": [("transformer", "greedy", 3.0), ("transformer", "beam5", 10.0)]}  # seconds
# The sample-efficiency target: (model, JoeyNMT's best validation BLEU, at most this many updates, batch tokens).
SAMPLE_TARGET = ("transformer", JOEYNMT_BEST, 2000, JOEYNMT_CURVE_BATCH_TOKENS)
# The same question per real target token: JoeyNMT's best BLEU with at most the tokens it took to get there.
SAMPLE_TOKENS_TARGET = ("transformer", JOEYNMT_BEST, max(JOEYNMT_CURVE) * JOEYNMT_TOKENS_PER_UPDATE)
# Time to quality (--time-to-quality): wall seconds (validation included) to JoeyNMT's best validation BLEU on
# the bench's machine, as a multiple of JoeyNMT's (its seconds per update measured in the same run x the
# updates its curve needs): (model, at least this many times sooner), per task.
TTQ_TARGETS = {"multi30k_de_en": [("transformer", 8.0), ("gru", 8.0)]}
