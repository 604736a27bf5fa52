"""Fine-tuning for sentence classification, evaluation (accuracy, F1, confusion matrix), prediction, and
zero-shot classification through a cloze prompt read by the MLM head.

Fine-tuning puts a fresh linear layer on the pooled [CLS] vector and trains everything with the shared
loop (warm-up, decay, clipping, evaluation every epoch; the best model by dev accuracy is kept).

Zero-shot: no labelled example at all. The sentence is wrapped in a prompt such as
`<sentence> it was [MASK] .` and the MLM head's scores for label words at the [MASK] decide:
P(label c) is proportional to sum over c's words of P(word | prompt). What the model learned about
language during pretraining is all it has.

Calibration (Zhao et al. 2021, "Calibrate before use"): a small model's scores are dominated by how
frequent each label word is ("good" is simply more common than "terrible"), so every sentence gets the
same label. Dividing each label's score by its score for a content-free input (the prompt with an empty
sentence) removes that prior and leaves what the sentence itself changes. On by default; `--no-calibrate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Batches, pad_batch, read_tsv
from ..functional import softmax
from ..models.bert import BertConfig, BertForMaskedLM, BertForSequenceClassification
from ..tensor import no_grad
from ..tokenizer import BertTokenizer
from .loop import Trainer, TrainConfig

DEFAULT_PROMPT = "{sentence} it was [MASK] ."
DEFAULT_LABEL_WORDS = (("terrible", "bad", "awful"), ("great", "good", "wonderful"))  # label 0, label 1
LABEL_NAMES = ("negative", "positive")


@dataclass
class FinetuneArgs:
    model: str
    train: str
    eval: str
    out: str
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    num_labels: int = 2
    max_steps: int = 0        # > 0 caps the run (a budget in steps instead of epochs)
    evals_per_epoch: int = 1
    eval_every: int = 0       # > 0: evaluate every this many steps instead of evals_per_epoch
    resume: bool = False


def load_classifier(path, num_labels: int = 2) -> tuple[BertForSequenceClassification, BertTokenizer]:
    """A classifier from a checkpoint folder: a fine-tuned one, or an encoder / MLM model (fresh head)."""
    import warnings

    path = Path(path)
    config = BertConfig.from_json(path / "config.json") if (path / "config.json").is_file() else None
    if config is None:
        raise FileNotFoundError(f"{path / 'config.json'}: missing; --model must be a checkpoint folder (HF layout)")
    if config.id2label is None or len(config.id2label) != num_labels:
        config.id2label = {i: (LABEL_NAMES[i] if num_labels == 2 else f"LABEL_{i}") for i in range(num_labels)}
        config.num_labels = num_labels
    with warnings.catch_warnings(record=True) as caught:  # expected when the checkpoint has no classifier yet
        warnings.simplefilter("always")
        model = BertForSequenceClassification.from_pretrained(path, config=config)
    fresh = [str(w.message) for w in caught if "initialised fresh" in str(w.message)]
    if fresh:
        print(f"{path}: no classification head yet; " + fresh[0].split(": ", 1)[1])
    return model, BertTokenizer.from_pretrained(path)


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
    probs = np.zeros((len(batches.sequences), model.config.num_labels), dtype=np.float32)
    with no_grad():
        for idx, batch in batches.iter_epoch(0, with_indices=True):
            batch.pop("labels", None)
            probs[idx] = softmax(model(**batch).logits).numpy()
    return probs


def evaluate_classifier(model, batches: Batches) -> dict:
    """Loss, accuracy, F1, confusion on labelled batches."""
    probs = predict_proba(model, batches)
    labels = batches.labels
    metrics = classification_metrics(probs.argmax(-1), labels, probs.shape[1])
    loss = float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())
    return {"loss": loss, **metrics}


def finetune(args: FinetuneArgs) -> dict:
    """`minillm finetune`: train a classifier, keep the best checkpoint by eval accuracy in args.out."""
    from ..tensor import manual_seed

    model, tok = load_classifier(args.model, args.num_labels)
    train_x, train_y = read_tsv(args.train, num_labels=args.num_labels)
    eval_x, eval_y = read_tsv(args.eval, num_labels=args.num_labels)
    manual_seed(args.seed)
    train = Batches.from_texts(train_x, train_y, tok, max_length=args.max_length, batch_size=args.batch_size,
                               shuffle=True, seed=args.seed)
    dev = Batches.from_texts(eval_x, eval_y, tok, max_length=args.max_length, batch_size=64, shuffle=False)
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

    cfg = TrainConfig(steps=steps, lr=args.lr, seed=args.seed, weight_decay=0.01, warmup_fraction=0.1,
                      eval_every=args.eval_every or max(1, per_epoch // max(1, args.evals_per_epoch)),
                      checkpoint_every=min(per_epoch, steps),
                      log_every=10, best_metric="accuracy")
    trainer = Trainer(model, cfg, args.out, get_batch, evaluate=lambda m: evaluate_classifier(m, dev),
                      save_model=lambda path: model.save_pretrained(path, tokenizer=tok),
                      count_tokens=lambda b: int(b["attention_mask"].sum()), desc="finetune")
    print(f"finetune: {len(train_x)} train / {len(eval_x)} eval sentences, {steps} steps "
          f"({per_epoch} per epoch), batch {args.batch_size}, lr {args.lr}")
    result = trainer.fit(resume=args.resume)
    result["best_accuracy"] = trainer.best
    return result


# --------------------------------------------------------------------------------------------------
# zero-shot cloze
def zero_shot_scores(model: BertForMaskedLM, tok: BertTokenizer, sentences, prompt: str = DEFAULT_PROMPT,
                     label_words=DEFAULT_LABEL_WORDS, batch_size: int = 64, max_length: int = 128,
                     calibrate: bool = True) -> np.ndarray:
    """(N, num_labels) probabilities of each label from the MLM head at the prompt's [MASK]."""
    if calibrate:
        prior = zero_shot_scores(model, tok, [""], prompt, label_words, calibrate=False)  # (1, num_labels)
        scores = zero_shot_scores(model, tok, sentences, prompt, label_words, batch_size, max_length, False)
        scores = scores / np.maximum(prior, 1e-30)
        return scores / scores.sum(-1, keepdims=True)
    if "{sentence}" not in prompt or "[MASK]" not in prompt:
        raise ValueError(f"prompt {prompt!r} must contain '{{sentence}}' and '[MASK]'")
    word_ids = []
    for words in label_words:
        ids = [tok.convert_tokens_to_ids([w])[0] for w in words if len(tok.tokenize(w)) == 1]
        ids = [i for i in ids if i != tok.unk_token_id]
        if not ids:
            raise ValueError(f"none of the label words {list(words)} is a single token of this vocabulary")
        word_ids.append(ids)
    texts = [prompt.replace("{sentence}", s.strip()).replace("[MASK]", tok.mask_token) for s in sentences]
    model.eval()
    out = np.zeros((len(texts), len(word_ids)), dtype=np.float64)
    with no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tok(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
            ids = np.asarray(enc["input_ids"])
            rows, cols = np.nonzero(ids == tok.mask_token_id)
            first = np.unique(rows, return_index=True)[1]             # the first [MASK] of each row
            hidden = model.bert(ids, enc["attention_mask"], enc["token_type_ids"]).last_hidden_state
            logits = model.cls.predictions(hidden[rows[first], cols[first]])  # (b, V) only at the masks
            p = softmax(logits).numpy().astype(np.float64)
            out[start + rows[first]] = np.stack([p[:, ids_c].sum(-1) for ids_c in word_ids], axis=-1)
    return out / np.maximum(out.sum(-1, keepdims=True), 1e-30)


def evaluate_zero_shot(path, data, prompt=DEFAULT_PROMPT, label_words=DEFAULT_LABEL_WORDS,
                       calibrate: bool = True) -> dict:
    path = Path(path)
    state_keys = _checkpoint_keys(path / "model.safetensors")
    if not any(k.startswith("cls.predictions") for k in state_keys):
        raise ValueError(f"{path}: --zero-shot needs a model with an MLM head (cls.predictions.*), "
                         "such as the output of `minillm pretrain`; this checkpoint has none")
    model = BertForMaskedLM.from_pretrained(path)
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
                         "first with `minillm finetune`, or use `minillm evaluate --zero-shot` on an MLM model")


def predict(path, texts) -> list[dict]:
    """Label and probability for each text, from a fine-tuned classifier folder."""
    _require_classifier(path)
    model, tok = load_classifier(path)
    batches = Batches.from_texts(texts, None, tok, batch_size=64, shuffle=False)
    probs = predict_proba(model, batches)
    names = model.config.id2label or {i: str(i) for i in range(probs.shape[1])}
    return [{"text": t, "label": names[int(p.argmax())], "probability": float(p.max())} for t, p in zip(texts, probs)]


def evaluate_path(path, data, max_length: int = 128) -> dict:
    _require_classifier(path)
    model, tok = load_classifier(path)
    sentences, labels = read_tsv(data, num_labels=model.config.num_labels)
    dev = Batches.from_texts(sentences, labels, tok, max_length=max_length, batch_size=64, shuffle=False)
    return evaluate_classifier(model, dev)

