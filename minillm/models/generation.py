"""Text generation: the decoding loop and the logits processors that turn a model's logits into a token.

A language model gives, for the last position, a score (logit) z_i for every token i of the vocabulary.
Generating is a loop: pick a token from the scores, append it, run the model on it, repeat. How to pick:

    greedy          i* = argmax_i z_i                                   (deterministic)
    sampling        i ~ softmax(z')  with z' the logits after the processors below, in this order:
      temperature   z'_i = z_i / tau              tau < 1 sharpens the distribution, tau > 1 flattens it
      top-k         z'_i = z_i if z_i >= z_(k) else -inf      z_(k) the k-th largest logit (ties kept)
      top-p         keep the smallest set of most likely tokens whose probabilities sum to more than p
                    (nucleus sampling, Holtzman et al. 2020); the others -inf; the most likely one always stays

Each processor is a small pure NumPy function on a (B, V) array, the formula in its docstring, written to
give the tokens transformers' TopKLogitsWarper and TopPLogitsWarper give (tests/test_generate.py checks
this on random logits). The loop (`generate`) runs the model under `no_grad` with a key/value cache
(`gpt2.KVCache`): after the prompt, each step feeds one token and computes one row per layer.

What this is not: no beam search, no repetition penalty, no min-p or typical sampling, no stop strings.
"""
from __future__ import annotations

import codecs

import numpy as np

from ..backend import to_device
from ..tensor import Tensor, default_rng, no_grad

NEG_INF = -np.inf


# --------------------------------------------------------------------------------------------------
# logits processors: (B, V) -> (B, V), pure functions
def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """z' = z / tau. Since softmax(z / tau)_i is proportional to p_i^(1/tau), tau -> 0 tends to greedy
    and tau = 1 leaves the model's distribution as it is."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r} (for greedy decoding use do_sample=False)")
    return logits if temperature == 1.0 else logits / np.asarray(temperature, logits.dtype)


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the k largest logits of each row: z'_i = z_i if z_i >= z_(k) else -inf, z_(k) the k-th largest.

    A logit tied with the k-th largest is kept too (so a row may keep more than k), as transformers does.
    top_k = 0 (or >= V) keeps everything.
    """
    V = logits.shape[-1]
    if top_k <= 0 or top_k >= V:
        return logits
    kth = np.partition(logits, V - top_k, axis=-1)[:, V - top_k:V - top_k + 1]  # (B, 1): the k-th largest
    return np.where(logits < kth, NEG_INF, logits).astype(logits.dtype, copy=False)


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filtering: keep the most likely tokens whose probabilities first add up to more than p.

    Sorted by probability in ascending order, p_(1) <= ... <= p_(V), with cumulative sums
    c_j = p_(1) + ... + p_(j), token (j) is removed when c_j <= 1 - p: the tail that holds at most 1 - p of
    the mass goes, the kept head holds at least p. The most likely token is never removed. p = 1 keeps
    everything. (transformers' TopPLogitsWarper, in float32 as there: the same sort and cumulative sum.)
    """
    if top_p >= 1.0:
        return logits
    order = np.argsort(logits, axis=-1, kind="stable")                 # (B, V) ascending
    ascending = np.take_along_axis(logits, order, axis=-1)
    probs = softmax(ascending)
    threshold = np.asarray(1.0 - top_p, probs.dtype)   # 1 - p in float64, then rounded, as transformers does
    remove_sorted = np.cumsum(probs, axis=-1, dtype=probs.dtype) <= threshold
    remove_sorted[:, -1] = False                                      # the most likely token stays
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)          # back to vocabulary order
    return np.where(remove, NEG_INF, logits).astype(logits.dtype, copy=False)


def softmax(logits: np.ndarray) -> np.ndarray:
    """p_i = exp(z_i - max z) / sum_j exp(z_j - max z) over the last axis; -inf logits get probability 0."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def process_logits(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Temperature, then top-k, then top-p: the order transformers applies them in."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def sample(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row drawn from probs (B, V) by inverting the cumulative distribution: with u uniform
    in (0, 1], the token is the first i with p_1 + ... + p_i >= u * (p_1 + ... + p_V). A token of
    probability 0 is never drawn (the sum does not rise there)."""
    cdf = np.cumsum(probs, axis=-1, dtype=np.float64)                  # (B, V)
    u = 1.0 - rng.random(probs.shape[0])                               # (B,) in (0, 1]
    return (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)              # (B,)


def next_tokens(logits: np.ndarray, do_sample: bool, temperature: float, top_k: int, top_p: float,
                rng: np.random.Generator) -> np.ndarray:
    """The token ids (B,) chosen from the last position's logits (B, V)."""
    if not do_sample:
        return logits.argmax(axis=-1)
    return sample(softmax(process_logits(logits, temperature, top_k, top_p)), rng)


# --------------------------------------------------------------------------------------------------
# the loop
def check_generation_args(max_new_tokens, temperature, top_k, top_p) -> None:
    """ValueError naming the argument, before anything runs."""
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float, np.number)) and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not is_int(top_k) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0: no top-k filtering), got {top_k!r}")
    if not (isinstance(top_p, (int, float, np.number)) and 0 <= top_p <= 1):
        raise ValueError(f"top_p must be a number in [0, 1] (1: no nucleus filtering), got {top_p!r}")


def generate(model, input_ids, max_new_tokens=20, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, seed=None,
             eos_token_id=None, use_cache=True, streamer=None, attention_mask=None) -> np.ndarray:
    """The decoding loop behind `GPT2LMHeadModel.generate` (whose docstring lists the arguments).

    With the cache, step 0 runs the prompt (B, T) and keeps every layer's keys and values; each later step
    runs only the token just chosen (B, 1) at position T + s, attending over the cache. Without it, each
    step runs the model over the whole sequence so far: the same tokens, O(T) times the work per step.
    Only the last position is projected onto the vocabulary (`logits_to_keep=1`).
    """
    from .gpt2 import KVCache  # the one model family with a cache so far

    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    ids = np.asarray(to_device(input_ids.data if isinstance(input_ids, Tensor) else input_ids, "cpu"))
    ids = ids[None, :] if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise ValueError(f"input_ids must be a non-empty (B, T) array of token ids, got shape {ids.shape}, "
                         f"dtype {ids.dtype}")
    B, T = ids.shape
    n_positions, vocab = model.config.n_positions, model.config.vocab_size
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab})")
    if T + max_new_tokens > n_positions:
        raise ValueError(f"the prompt has {T} tokens and max_new_tokens is {max_new_tokens}: {T + max_new_tokens} "
                         f"positions, more than the model's n_positions = {n_positions} (at most "
                         f"{max(n_positions - T, 0)} new tokens for this prompt)")
    mask = None
    if attention_mask is not None:
        mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        mask = np.asarray(to_device(mask, "cpu")).astype(np.int64)
        if mask.ndim == 1:
            mask = mask[None, :]
        if mask.shape != (B, T):
            raise ValueError(f"attention_mask has shape {mask.shape} but input_ids has shape {(B, T)}")
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    rng = np.random.default_rng(seed) if seed is not None else default_rng()

    out = np.empty((B, T + max_new_tokens), np.int64)   # the sequences, filled as they grow
    out[:, :T] = ids
    finished = np.zeros(B, bool)
    cache = KVCache(model.config.n_layer, capacity=T + max_new_tokens, max_length=n_positions) if use_cache else None
    put = _streamer_put(streamer)
    if streamer is not None and hasattr(streamer, "put"):
        streamer.put(ids)                                # transformers' protocol: the prompt first
    was_training = model.training
    model.eval()   # dropout off while generating; the previous mode comes back at the end
    n = T
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                # step 0 (or every step without the cache): the whole sequence; later: the new token only
                step_ids = out[:, :n] if cache is None or n == T else out[:, n - 1:n]     # (B, T) or (B, 1)
                kwargs = {}
                if mask is not None:   # left padding: positions count real tokens only, as transformers does
                    positions = np.cumsum(mask, axis=-1) - 1
                    positions[mask == 0] = 1
                    kwargs = dict(attention_mask=mask, position_ids=positions[:, n - step_ids.shape[1]:n])
                logits = model(step_ids, past_key_values=cache, use_cache=cache is not None, logits_to_keep=1,
                               **kwargs).logits
                logits = to_device(logits.data[:, -1], "cpu")                        # (B, V)
                new = next_tokens(logits, do_sample, temperature, top_k, top_p, rng)  # (B,)
                if eos is not None:
                    new = np.where(finished, eos, new)     # a finished row is padded with eos
                    finished |= new == eos
                out[:, n] = new
                n += 1
                if mask is not None:
                    mask = np.concatenate([mask, np.ones((B, 1), mask.dtype)], axis=1)
                if put is not None:
                    put(out[:, n - 1].copy())
                if eos is not None and finished.all():
                    break
    finally:
        model.train(was_training)
        if streamer is not None and hasattr(streamer, "end"):
            streamer.end()
    return out[:, :n]


def _streamer_put(streamer):
    if streamer is None:
        return None
    if hasattr(streamer, "put"):
        return streamer.put
    if callable(streamer):
        return streamer
    raise TypeError(f"streamer must have put(ids)/end() methods or be callable, got {type(streamer).__name__}")


# --------------------------------------------------------------------------------------------------
# streaming text
class TextStreamer:
    """Writes the text of the new tokens as they come (the prompt skipped), for a byte-level BPE tokenizer.

    A token is a run of bytes, and a character of several UTF-8 bytes may be split over two tokens: the
    bytes go through an incremental UTF-8 decoder, which holds an incomplete character back until its last
    byte arrives, so no character is ever printed broken (U+FFFD appears only for bytes that can never
    complete one). Special tokens (<|endoftext|>) are skipped. Batch size 1.
    """

    def __init__(self, tokenizer, write, skip_special_tokens: bool = True):
        from ..bpe import bytes_to_unicode

        self.tokenizer, self.write = tokenizer, write
        self.byte_of = {c: b for b, c in bytes_to_unicode().items()}   # byte character -> byte value
        self.specials = set(tokenizer.special_tokens) if skip_special_tokens else set()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors=getattr(tokenizer, "errors", "replace"))
        self.prompt_seen = False

    def put(self, ids) -> None:
        ids = np.asarray(ids)
        if not self.prompt_seen:      # the first call is the prompt (transformers' protocol)
            self.prompt_seen = True
            return
        for i in ids.reshape(-1):
            token = self.tokenizer.convert_ids_to_tokens(int(i))
            if token in self.specials:
                continue
            data = bytes(self.byte_of[c] for c in token) if all(c in self.byte_of for c in token) else \
                token.encode("utf-8")  # a special token kept as text
            text = self.decoder.decode(data)
            if text:
                self.write(text)

    def end(self) -> None:
        text = self.decoder.decode(b"", final=True)   # bytes of a character that never completed
        if text:
            self.write(text)


def load_for_generation(path, device: str = "cpu"):
    """A GPT-2 folder written by save_pretrained with its tokenizer beside it -> (model, tokenizer).

    Refuses, with the reason, a folder whose config.json is another family's (a BERT checkpoint) before
    building anything, and a folder without the byte-level BPE files (vocab.json + merges.txt).
    """
    import json
    from pathlib import Path

    from ..bpe import ByteLevelBPETokenizer
    from .gpt2 import GPT2LMHeadModel

    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no config.json; --model needs a folder written by save_pretrained")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{config}: not a JSON object of config fields ({e})") from e
    if model_type != "gpt2":
        raise ValueError(f"{path} holds a {model_type!r} model, not GPT-2: generate needs a causal language model "
                         "(GPT2LMHeadModel); " + ("a BERT checkpoint predicts masked tokens, try `minillm fill-mask`"
                                                  if model_type == "bert" else "its config.json says otherwise"))
    if not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()) and \
            not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: no vocab.json + merges.txt beside the model (save the tokenizer with "
                                "tokenizer.save_pretrained(folder))")
    model = GPT2LMHeadModel.from_pretrained(path)
    tokenizer = ByteLevelBPETokenizer.from_pretrained(path)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {len(tokenizer)} ids but the model only {model.config.vocab_size}")
    return (model.to(device) if device != "cpu" else model), tokenizer


def stream_generate(path, prompt: str, write, max_new_tokens: int = 50, temperature: float | None = None,
                    top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                    device: str = "cpu") -> np.ndarray:
    """`minillm generate`: encode the prompt, generate, and write(text) the new text as it is produced.

    Sampling is on when any of temperature, top_k, top_p is given (temperature 0 means greedy);
    otherwise greedy, the deterministic default of transformers' generate. An empty prompt starts
    from the beginning-of-text token, as GPT-2's unconditional samples do. Returns the ids (1, T + n).
    """
    model, tokenizer = load_for_generation(path, device)
    ids = tokenizer.encode(prompt)
    if not ids:
        if model.config.bos_token_id is None:
            raise ValueError("the prompt is empty and the model has no bos_token_id to start from")
        ids = [model.config.bos_token_id]
    n_positions = model.config.n_positions
    if len(ids) >= n_positions:
        raise ValueError(f"the prompt is {len(ids)} tokens long; the model reads at most n_positions = {n_positions} "
                         "positions, prompt and new tokens together: shorten the prompt")
    if len(ids) + max_new_tokens > n_positions:
        raise ValueError(f"the prompt is {len(ids)} tokens and --max-new-tokens is {max_new_tokens}: together more "
                         f"than n_positions = {n_positions}; use --max-new-tokens {n_positions - len(ids)} or less")
    do_sample = any(v is not None for v in (temperature, top_k, top_p)) and temperature != 0
    return model.generate(np.asarray([ids]), max_new_tokens=max_new_tokens, do_sample=do_sample,
                          temperature=temperature or 1.0, top_k=top_k or 0,
                          top_p=1.0 if top_p is None else top_p, seed=seed,
                          streamer=TextStreamer(tokenizer, write))
