"""Fine-tuning for sentence classification, evaluation (accuracy, F1, confusion matrix), prediction, and
zero-shot classification through a cloze prompt read by the MLM head.

Fine-tuning puts a fresh linear layer on the pooled [CLS] vector and trains everything with the shared
loop (warm-up, decay, clipping, periodic evaluation). Model selection and the final number are kept
apart: a seeded validation split carved from the *training* file (5%, at most 1,000 rows, never trained
on) picks the best checkpoint; the `--eval` file is scored once, at the end, on that checkpoint. A
number measured on the data that chose the model would flatter it. metrics.jsonl says which is which:
eval rows carry `"eval_split": "validation"` or `"eval_split": "dev"`.

Zero-shot: no labelled example at all. The sentence is wrapped in a prompt such as
`<sentence> it was [MASK] .` and the MLM head's scores for label words at the [MASK] decide:
P(label c) is proportional to sum over c's words of P(word | prompt). What the model learned about
language during pretraining is all it has. A sentence too long for the model is cut, never the prompt:
the prompt's pieces and the sentence are tokenized separately and only the sentence's ids are trimmed,
so the [MASK] is always there to be read.

Calibration (Zhao et al. 2021, "Calibrate before use"): a small model's scores are dominated by how
frequent each label word is ("good" is simply more common than "terrible"), so every sentence gets the
same label. Dividing each label's score by its score for a content-free input (the prompt with an empty
sentence) removes that prior and leaves what the sentence itself changes. On by default; `--no-calibrate`.

Every entry point takes `device` ("cpu" or "cuda"): the model is moved there once, and every batch goes
there through `loop.on_device`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backend import xp
from ..data import Batches, pad_batch, read_tsv
from ..functional import softmax
from ..models.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification
from ..tensor import no_grad
from ..tokenizer import BertTokenizer
from .device import device_of, on_device
from .checks import (check_out_dir, check_settings, classifier_length, dropout_rate, label_count, nonnegative_float,
                     nonnegative_int, open_fraction, positive_float, positive_int, random_seed, setting, warmup_amount,
                     warmup_split)
from .loop import Trainer, TrainConfig
from .resume import check_resume, run_record

DEFAULT_PROMPT = "{sentence} it was [MASK] ."
DEFAULT_LABEL_WORDS = (("terrible", "bad", "awful"), ("great", "good", "wonderful"))  # label 0, label 1
# Label-word search (search_label_words): the prompt benchmarks/zero_shot_cloze.py chose on SST-2 train, and
# the floor on a candidate word's mean probability at the [MASK].
SEARCH_PROMPT = "{sentence} a [MASK] movie ."
MIN_MEAN_PROBABILITY = 1e-4
LABEL_NAMES = ("negative", "positive")
MAX_VALIDATION_ROWS = 1000
VALIDATION_SPLITS = ("rows", "sentences")   # validation_split, sentence_validation_split
POOLINGS = ("cls", "mean")                  # BertConfig.classifier_pooling


@dataclass
class FinetuneArgs:
    """`minillm finetune`'s arguments; each numeric one is checked on creation by its flag's own Check."""
    model: str
    train: str
    eval: str | None          # scored once, at the end, on the model chosen on the validation split (None:
                              # nothing is scored but the validation split, as when comparing recipes)
    out: str
    epochs: float = setting(positive_float, 3.0)
    lr: float = setting(positive_float, 5e-5)
    batch_size: int = setting(positive_int, 32)
    max_length: int = setting(classifier_length, 128)
    seed: int = setting(random_seed, 0)
    num_labels: int = setting(label_count, 2)
    max_steps: int = setting(nonnegative_int, 0)      # > 0 caps the run (a budget in steps instead of epochs)
    evals_per_epoch: int = setting(positive_int, 1)
    eval_every: int = setting(nonnegative_int, 0)     # > 0: evaluate every this many steps instead of evals_per_epoch
    resume: bool = False
    # of the training rows, held out to choose the checkpoint (<= 1,000 rows)
    validation_fraction: float = setting(open_fraction, 0.05)
    # "rows": a random share of the rows; "sentences": whole sentences with each of their phrases removed
    # from training (sentence_validation_split: for SST-2, whose rows are phrases of one another)
    validation: str = "rows"
    # a --max-length beyond the checkpoint's positions grows its position table (BertPreTrainedModel.
    # extend_positions: the learned rows repeated) instead of being refused
    extend_positions: bool = False
    # BERT's fine-tuning recipe (Devlin et al. 2019: dropout 0.1 kept for fine-tuning, appendix A.3; its
    # fine-tuning script, run_classifier in google-research/bert: warm-up over the first 10% of the steps, AdamW weight decay 0.01). warmup >= 1 is
    # a number of steps. --dropout replaces whatever the checkpoint's config.json says (a model pretrained
    # without dropout would otherwise be fine-tuned without it too)
    warmup: float = setting(warmup_amount, 0.1)
    weight_decay: float = setting(nonnegative_float, 0.01)
    dropout: float = setting(dropout_rate, 0.1)
    # the sentence vector: "cls" (BERT's [CLS] token) or "mean" (the mean over the tokens; models/bert.py says
    # why, benchmarks/results/finetune_recipe.md what it buys); None keeps the checkpoint's own
    pooling: str | None = None
    device: str = "cpu"

    def __post_init__(self):
        check_settings(self)
        if self.validation not in VALIDATION_SPLITS:
            raise ValueError(f"validation={self.validation!r}: must be one of {sorted(VALIDATION_SPLITS)}")
        if self.pooling not in (None, *POOLINGS):
            raise ValueError(f"pooling={self.pooling!r}: must be one of {list(POOLINGS)}")
        check_out_dir(self.out)


def load_classifier(path, num_labels: int | None = None, device: str = "cpu", dropout: float | None = None,
                    pooling: str | None = None) -> tuple[BertForSequenceClassification, BertTokenizer]:
    """A classifier from a checkpoint folder: a fine-tuned one, or an encoder / MLM model (fresh head).

    num_labels: None keeps the checkpoint's own (config.json's num_labels / id2label), which is what
    evaluating or predicting with a fine-tuned model needs; a number sizes a fresh head for fine-tuning.
    dropout: None keeps config.json's; a number sets the hidden-state and classifier dropout.
    pooling: None keeps config.json's classifier_pooling; "cls" or "mean" sets it (and the model_type with it).
    """
    import warnings

    path = Path(path)
    config = BertConfig.from_json(path / "config.json") if (path / "config.json").is_file() else None
    if config is None:
        raise FileNotFoundError(f"{path / 'config.json'}: missing; --model must be a checkpoint folder (HF layout)")
    num_labels = config.num_labels if num_labels is None else num_labels
    if config.id2label is None or len(config.id2label) != num_labels:
        config.id2label = {i: (LABEL_NAMES[i] if num_labels == 2 else f"LABEL_{i}") for i in range(num_labels)}
        config.num_labels = num_labels
    if dropout is not None:
        config.hidden_dropout_prob, config.classifier_dropout = dropout, None  # None: the classifier uses it too
    if pooling is not None:
        config.classifier_pooling = pooling
        config.model_type = config.expected_model_type()
    config.validate()
    with warnings.catch_warnings(record=True) as caught:  # expected when the checkpoint has no classifier yet
        warnings.simplefilter("always")
        model = BertForSequenceClassification.from_pretrained(path, config=config)
    fresh = [str(w.message) for w in caught if "initialised fresh" in str(w.message)]
    if fresh:
        print(f"{path}: no classification head yet; " + fresh[0].split(": ", 1)[1])
    return model.to(device), BertTokenizer.from_pretrained(path)


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """Accuracy, macro-F1 and the confusion matrix (rows: true label, columns: predicted)."""
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    tp = np.diag(confusion).astype(float)
    precision = tp / np.maximum(confusion.sum(axis=0), 1)
    recall = tp / np.maximum(confusion.sum(axis=1), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return {"accuracy": float(tp.sum() / max(len(labels), 1)), "f1": float(f1.mean()),
            "confusion": confusion.tolist(), "n": int(len(labels))}


def predict_proba(model, batches: Batches) -> np.ndarray:
    """(N, num_labels) class probabilities, in the order of the data set."""
    model.eval()
    device = device_of(model)
    probs = np.zeros((len(batches.sequences), model.config.num_labels), dtype=np.float32)
    with no_grad():
        for idx, batch in batches.iter_epoch(0, with_indices=True):
            batch.pop("labels", None)
            probs[idx] = softmax(model(**on_device(batch, device)).logits).numpy()
    return probs


def evaluate_classifier(model, batches: Batches) -> dict:
    """Loss, accuracy, F1, confusion on labelled batches."""
    probs = predict_proba(model, batches)
    labels = batches.labels
    metrics = classification_metrics(probs.argmax(-1), labels, probs.shape[1])
    loss = float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())
    return {"loss": loss, **metrics}


def validation_split(n: int, fraction: float, seed: int,
                     max_rows: int = MAX_VALIDATION_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): disjoint sorted indices into n training examples, drawn with `seed`.

    The validation part is round(fraction * n) rows, at least 1 and at most `max_rows`: enough to rank
    checkpoints (the standard error of an accuracy near 0.8 on 1,000 rows is 1.3 points), not so many
    that a large training set loses much.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--validation-fraction {fraction}: must be in (0, 1); the checkpoint is chosen on "
                         "these held-out training rows, never on the --eval file")
    n_val = min(max_rows, max(1, int(round(fraction * n))))
    if n - n_val < 1:
        raise ValueError(f"the training file has {n} rows: too few to hold out {n_val} for validation")
    order = np.random.default_rng([seed, 0x7A1]).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def sentence_validation_split(sentences: list[str], fraction: float, seed: int,
                              max_rows: int = MAX_VALIDATION_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) for a training file whose rows are parts of one another, as SST-2's are.

    SST-2's training file holds every phrase of each sentence's parse tree as its own labelled row ("a
    gorgeous , witty , seductive movie" and also "gorgeous , witty"). A random split (validation_split)
    leaves most of a validation sentence's phrases, with their labels, in training: it then rewards the
    model that memorises phrases, and ranks checkpoints and recipes by that. Here the validation rows are
    whole sentences, drawn (seeded) among the longest rows (the longest 4 x n_val: full sentences, not
    fragments), and every row that is a word span of a validation row is removed from training, so no part
    of a validation sentence is ever trained on. The cost is those removed rows (about 13,000 of SST-2's
    67,349 for 1,000 validation sentences); rows that are not parts of one another lose nothing but
    duplicates.
    """
    train, val = validation_split(len(sentences), fraction, seed, max_rows)   # the same checks and sizes
    words = [" ".join(s.split()) for s in sentences]
    lengths = np.array([len(w.split(" ")) for w in words])
    pool = np.argsort(-lengths, kind="stable")[:4 * len(val)]
    val = np.sort(np.random.default_rng([seed, 0x5E7]).choice(pool, len(val), replace=False))
    spans = set()
    for i in val:
        w = words[i].split(" ")
        spans.update(" ".join(w[a:b]) for a in range(len(w)) for b in range(a + 1, len(w) + 1))
    train = np.array([i for i, w in enumerate(words) if w not in spans], dtype=np.int64)
    if len(train) < 1:
        raise ValueError(f"the training file has {len(sentences)} rows, all of them parts of the {len(val)} "
                         "validation sentences: nothing is left to train on")
    return train, val


def finetune(args: FinetuneArgs) -> dict:
    """`minillm finetune`: train a classifier; keep in args.out the checkpoint that scores best on the
    validation split (held-out training rows); score args.eval once with it. Returns the args.eval metrics
    with the validation accuracy that chose the checkpoint (only the latter when args.eval is None)."""
    from ..tensor import manual_seed

    # What defines this run, recorded in its checkpoints: a resume that differs is refused. Files count by
    # their SHA-256 (--model by its config.json, vocab.txt, tokenizer_config.json); the device may change.
    run = run_record(args, files=("model", "train", "eval"), exclude=("out", "resume", "device"))
    if args.resume:  # a broken or different checkpoint is reported before any data is read
        check_resume(args.out, run)
    model, tok = load_classifier(args.model, args.num_labels, device=args.device, dropout=args.dropout,
                                 pooling=args.pooling)
    max_length, positions = args.max_length, model.config.max_position_embeddings
    if max_length > positions and args.extend_positions:
        model.extend_positions(max_length)
        print(f"finetune: position table grown from {positions} to {max_length} rows (the learned rows repeated)")
    elif max_length > positions:
        max_length = positions
        print(f"finetune: --max-length {args.max_length} is beyond the {positions} positions of {args.model}: rows "
              f"are cut at {positions} tokens (--extend-positions grows the position table instead)")
    sentences, labels = read_tsv(args.train, num_labels=args.num_labels)
    eval_x, eval_y = read_tsv(args.eval, num_labels=args.num_labels) if args.eval else ([], None)  # a bad file
    # fails now, before training
    if args.validation == "sentences":
        train_rows, val_rows = sentence_validation_split(sentences, args.validation_fraction, args.seed)
    else:
        train_rows, val_rows = validation_split(len(sentences), args.validation_fraction, args.seed)
    manual_seed(args.seed)
    train = Batches.from_texts([sentences[i] for i in train_rows], labels[train_rows], tok,
                               max_length=max_length, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    val = Batches.from_texts([sentences[i] for i in val_rows], labels[val_rows], tok, max_length=max_length,
                             batch_size=64, shuffle=False)
    per_epoch = len(train)
    steps = int(round(args.epochs * per_epoch))
    if args.max_steps:
        steps = min(steps, args.max_steps)
    steps = max(steps, 1)
    epoch_cache = {}

    def get_batch(step, micro, rng):
        epoch, i = divmod(step, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = train.batch_indices(epoch)
        idx = epoch_cache[epoch][i]
        input_ids, attention_mask = pad_batch([train.sequences[j] for j in idx], tok.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": train.labels[idx]}

    fraction, warmup_steps = warmup_split(args.warmup)
    if warmup_steps is not None and warmup_steps >= steps:
        raise ValueError(f"--warmup {warmup_steps} steps is not below the {steps} steps of this run: the learning "
                         "rate would never decay; give fewer, or a fraction of the steps (e.g. --warmup 0.1)")
    cfg = TrainConfig(steps=steps, lr=args.lr, seed=args.seed, weight_decay=args.weight_decay,
                      warmup_fraction=fraction, warmup_steps=warmup_steps,
                      eval_every=args.eval_every or max(1, per_epoch // max(1, args.evals_per_epoch)),
                      checkpoint_every=min(per_epoch, steps),
                      log_every=10, best_metric="accuracy")
    trainer = Trainer(model, cfg, args.out, get_batch,
                      evaluate=lambda m: {"eval_split": "validation", **evaluate_classifier(m, val)},
                      save_model=lambda path: model.save_pretrained(path, tokenizer=tok),
                      count_tokens=lambda b: int(b["attention_mask"].sum()), desc="finetune", device=args.device,
                      run=run)
    print(f"finetune: {len(train_rows)} train / {len(val_rows)} validation {args.validation} (held out of {args.train}, chooses "
          f"the checkpoint) / {len(eval_x)} eval sentences (scored once, at the end), {steps} steps "
          f"({per_epoch} per epoch), batch {args.batch_size}, lr {args.lr}, warm-up {cfg.warmup} steps, weight decay "
          f"{args.weight_decay:g}, dropout {args.dropout:g}, pooling {model.config.classifier_pooling}")
    trainer.fit(resume=args.resume)

    chosen_by = {"validation_accuracy": trainer.best, "validation_n": int(len(val_rows))}
    if not args.eval:
        print(f"finetune: best validation accuracy {trainer.best:.4f} on {len(val_rows)} held-out training rows "
              "(no --eval file: nothing else scored)")
        return chosen_by
    chosen, _ = load_classifier(args.out, device=args.device)  # the checkpoint the validation split chose
    dev = Batches.from_texts(eval_x, eval_y, tok, max_length=max_length, batch_size=64, shuffle=False)
    final = {"eval_split": "dev", **evaluate_classifier(chosen, dev)}
    if trainer.comm.is_root:  # under MPI, rank 0 alone writes metrics.jsonl
        with open(Path(args.out) / "metrics.jsonl", "a", encoding="utf-8") as f:  # the one row scored on --eval
            f.write(json.dumps({"step": trainer.step, "split": "eval", **final}) + "\n")
    print(f"finetune: {args.eval}: accuracy {final['accuracy']:.4f} of the checkpoint with the best validation "
          f"accuracy ({trainer.best:.4f} on {len(val_rows)} held-out training rows)")
    return {**final, **chosen_by}


# --------------------------------------------------------------------------------------------------
# zero-shot cloze
def label_word_ids(tok: BertTokenizer, label_words) -> list[list[int]]:
    """For each label, the ids of its words that are one token of the vocabulary (the others are dropped)."""
    word_ids = []
    for words in label_words:
        ids = [tok.convert_tokens_to_ids([w])[0] for w in words if len(tok.tokenize(w)) == 1]
        ids = [i for i in ids if i != tok.unk_token_id]
        if not ids:
            raise ValueError(f"none of the label words {list(words)} is a single token of this vocabulary")
        word_ids.append(ids)
    return word_ids


def encode_cloze(tok: BertTokenizer, sentences, prompt: str = DEFAULT_PROMPT,
                 max_length: int = 128) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of `[CLS] prompt-with-sentence [SEP]` for each sentence, and where each one's [MASK] is.

    The prompt's text before and after `{sentence}` and the sentence are tokenized separately (the same ids
    as tokenizing the joined text whenever `{sentence}` is set off by spaces or punctuation, as in the
    default prompt); a sentence that does not fit in max_length loses its *last* tokens, the prompt none.

    Returns:
        rows: N lists of ids; mask_positions: (N,) index of the prompt's [MASK] in each row.
    """
    if prompt.count("{sentence}") != 1 or prompt.count("[MASK]") != 1:
        raise ValueError(f"prompt {prompt!r} must contain '{{sentence}}' once and '[MASK]' once")
    before, after = (tok.convert_tokens_to_ids(tok.tokenize(part.replace("[MASK]", tok.mask_token)))
                     for part in prompt.split("{sentence}"))
    room = max_length - 2 - len(before) - len(after)  # ids left for the sentence between [CLS] and [SEP]
    if room < 1:
        raise ValueError(f"prompt {prompt!r} takes {len(before) + len(after) + 2} of max_length={max_length} "
                         "tokens with [CLS] and [SEP]; no room is left for the sentence")
    rows, positions = [], []
    for s in sentences:
        ids = tok.convert_tokens_to_ids(tok.tokenize(s.strip()))[:room]
        rows.append([tok.cls_token_id, *before, *ids, *after, tok.sep_token_id])
        positions.append(1 + (before.index(tok.mask_token_id) if tok.mask_token_id in before
                              else len(before) + len(ids) + after.index(tok.mask_token_id)))
    return rows, np.asarray(positions, dtype=np.int64)


def zero_shot_scores(model: BertForMaskedLM, tok: BertTokenizer, sentences, prompt: str = DEFAULT_PROMPT,
                     label_words=DEFAULT_LABEL_WORDS, batch_size: int = 64, max_length: int = 128,
                     calibrate: bool = True) -> np.ndarray:
    """(N, num_labels) probabilities of each label from the MLM head at the prompt's [MASK].

    score(c) = sum over c's words w of softmax(logits at [MASK])_w, normalised over the labels; calibrated,
    score(c) / score_content_free(c), normalised again. Runs where the model's parameters are.
    """
    if calibrate:
        prior = zero_shot_scores(model, tok, [""], prompt, label_words, 1, max_length, False)  # (1, num_labels)
        scores = zero_shot_scores(model, tok, sentences, prompt, label_words, batch_size, max_length, False)
        scores = scores / np.maximum(prior, 1e-30)
        return scores / scores.sum(-1, keepdims=True)
    word_ids = label_word_ids(tok, label_words)
    out = np.zeros((len(sentences), len(word_ids)), dtype=np.float64)
    for start, p in mask_probabilities(model, tok, sentences, prompt, batch_size, max_length):
        out[start:start + len(p)] = np.stack([p[:, ids].sum(-1) for ids in word_ids], axis=-1)
    return out / np.maximum(out.sum(-1, keepdims=True), 1e-30)


def mask_probabilities(model: BertForMaskedLM, tok: BertTokenizer, sentences, prompt: str = DEFAULT_PROMPT,
                       batch_size: int = 64, max_length: int = 128):
    """Yields (start, (b, V) float64 array): the MLM head's distribution over the vocabulary at the prompt's
    [MASK], for sentences[start:start + b], a batch at a time (the whole (N, V) array can be large)."""
    rows, positions = encode_cloze(tok, sentences, prompt, max_length)
    model.eval()
    device = device_of(model)
    with no_grad():
        for start in range(0, len(rows), batch_size):
            input_ids, attention_mask = pad_batch(rows[start:start + batch_size], tok.pad_token_id)  # (b, T)
            batch = on_device({"input_ids": input_ids, "attention_mask": attention_mask,
                               "mask_positions": positions[start:start + batch_size]}, device)
            hidden = model.bert(batch["input_ids"], batch["attention_mask"]).last_hidden_state  # (b, T, C)
            at_mask = hidden[xp(hidden.data).arange(len(input_ids)), batch["mask_positions"]]  # (b, C)
            yield start, softmax(model.cls.predictions(at_mask)).numpy().astype(np.float64)   # (b, V)


def search_label_words(model: BertForMaskedLM, tok: BertTokenizer, sentences, labels, prompt: str = SEARCH_PROMPT,
                       k_values=(5,), min_mean_probability: float = MIN_MEAN_PROBABILITY) -> dict[int, tuple]:
    """Label words found on labelled sentences of a *training* file (Schick et al. 2020, "Automatically
    identifying words that can serve as labels for few-shot text classification"; Gao et al. 2021, LM-BFF).

    For every whole word w of the vocabulary: the mean over the positive sentences of its calibrated
    log-probability at the [MASK], log p(w | prompt with the sentence) - log p(w | prompt, empty sentence),
    minus the same mean over the negative sentences. The k highest are label 1's words, the k lowest label
    0's. Only words the model predicts there with mean probability >= min_mean_probability compete: a
    rarer word's log-ratio is too noisy to rank on a few thousand sentences. Two labels only.
    Returns {k: (label 0 words, label 1 words)} for each k in k_values."""
    labels = np.asarray(labels)
    prior = next(mask_probabilities(model, tok, [""], prompt))[1][0]                        # (V,)
    sums, total = np.zeros((2, len(prior))), np.zeros(len(prior))
    for start, p in mask_probabilities(model, tok, sentences, prompt):
        log_ratio = np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(prior, 1e-30))        # (b, V)
        y = labels[start:start + len(p)]
        for c in (0, 1):
            sums[c] += log_ratio[y == c].sum(0)
        total += p.sum(0)
    score = sums[1] / max((labels == 1).sum(), 1) - sums[0] / max((labels == 0).sum(), 1)
    vocab = tok.convert_ids_to_tokens(list(range(len(prior))))
    usable = np.array([w.isalpha() and not w.startswith("##") for w in vocab])
    usable &= total / max(len(sentences), 1) >= min_mean_probability
    order = [i for i in np.argsort(score, kind="stable") if usable[i]]                     # most negative first
    return {k: (tuple(vocab[i] for i in order[:k]), tuple(vocab[i] for i in order[::-1][:k])) for k in k_values}


def evaluate_zero_shot(path, data, prompt=DEFAULT_PROMPT, label_words=DEFAULT_LABEL_WORDS,
                       calibrate: bool = True, device: str = "cpu") -> dict:
    path = Path(path)
    state_keys = _checkpoint_keys(path / "model.safetensors")
    if not any(k.startswith("cls.predictions") for k in state_keys):
        raise ValueError(f"{path}: --zero-shot needs a model with an MLM head (cls.predictions.*), "
                         "such as the output of `minillm pretrain`; this checkpoint has none")
    model = BertForMaskedLM.from_pretrained(path).to(device)
    tok = BertTokenizer.from_pretrained(path)
    sentences, labels = read_tsv(data, num_labels=len(label_words))
    probs = zero_shot_scores(model, tok, sentences, prompt, label_words, calibrate=calibrate)
    return {"loss": float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean()),
            **classification_metrics(probs.argmax(-1), labels, len(label_words))}


def _checkpoint_keys(path) -> list[str]:
    from ..models.checkpoint import read_safetensors

    return list(read_safetensors(path))


def _require_classifier(path) -> None:
    if "classifier.weight" not in _checkpoint_keys(Path(path) / "model.safetensors"):
        raise ValueError(f"{path}: this checkpoint has no classification head (classifier.weight); fine-tune it "
                         "first with `minillm finetune`, or use `minillm evaluate --zero-shot` on a pretrained model "
                         "(an MLM or a causal LM)")


def predict(path, texts, device: str = "cpu") -> list[dict]:
    """Label and probability for each text, from a fine-tuned classifier folder (its own number of labels)."""
    _require_classifier(path)
    model, tok = load_classifier(path, device=device)
    batches = Batches.from_texts(texts, None, tok, batch_size=64, shuffle=False)
    probs = predict_proba(model, batches)
    names = model.config.id2label or {i: str(i) for i in range(probs.shape[1])}
    return [{"text": t, "label": names[int(p.argmax())], "probability": float(p.max())} for t, p in zip(texts, probs)]


def evaluate_path(path, data, max_length: int | None = None, device: str = "cpu") -> dict:
    """Metrics of a fine-tuned classifier folder on a labelled TSV; the labels it knows come from its config.
    Rows are cut at max_length tokens (None: the model's positions, what it was fine-tuned to read)."""
    _require_classifier(path)
    model, tok = load_classifier(path, device=device)
    max_length = min(max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    sentences, labels = read_tsv(data, num_labels=model.config.num_labels)
    dev = Batches.from_texts(sentences, labels, tok, max_length=max_length, batch_size=64, shuffle=False)
    return evaluate_classifier(model, dev)
