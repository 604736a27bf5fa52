"""`minillm`: the command line.

    minillm demo                                   the main job: pretrain, zero-shot, fine-tune, report
    minillm pretrain --preset tiny|mini|small --corpus FILE [FILE ...] --out DIR [--steps N | --minutes M] ...
    minillm pretrain --objective clm --preset gpt-tiny|gpt-mini|gpt-small ...   the causal LM (GPT-2)
    minillm finetune --model DIR --train FILE --eval FILE --out DIR [--epochs E] [--lr LR] [--batch-size B]
    minillm evaluate --model DIR --data FILE [--zero-shot]   last stdout line: {"accuracy": a, "n": n}
    minillm predict  --model DIR TEXT [TEXT ...]
    minillm fill-mask --model DIR TEXT [--top-k K]   the top-k tokens at each [MASK], with probabilities
    minillm attention --model DIR --text TEXT --out FILE.png [--layer L] [--head H]   attention maps
    minillm generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P]
                     [--seed S]                    GPT-2 continues the prompt, streamed to stdout
    minillm bench                                  the kernel benchmark (benchmarks/kernels.py)

Errors a user can act on (bad files, shapes, flags) are printed as one line `minillm: error: ...` with
exit status 2, not as a traceback; set MINILLM_DEBUG=1 to see the traceback. A bad flag value (a batch
size of 0, a negative learning rate, an --out that is a file) never gets that far: each numeric flag's
`type=` is a Check from minillm/train/checks.py (the same one that guards the dataclass field behind it),
so argparse refuses it at parse time with its usage line and the flag's name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


from .train.checks import (classifier_length, dropout_rate, label_count, mask_rate, nonnegative_float, nonnegative_int,
                           open_fraction, out_dir, positive_float, positive_int, probability, random_seed,
                           sequence_length, warmup_amount)


def _add_backend(p):
    p.add_argument("--backend", choices=("numpy", "numba", "cupy"), default=None,
                   help="kernel backend (default: MINILLM_BACKEND or numba)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda runs the cupy kernels on a GPU (needs pip install -e '.[gpu]')")


def _add_distributed(p):
    """Data parallel over MPI (minillm/train/distributed.py; docs/distributed.md)."""
    p.add_argument("--ranks", type=positive_int, default=None,
                   help="run as N processes under mpiexec (or start with `mpiexec -n N minillm ...`); --batch-size "
                        "stays the global batch; needs pip install -e '.[dist]'")
    p.add_argument("--zero", type=nonnegative_int, choices=(0, 1), default=0,
                   help="1: ZeRO stage 1, the AdamW moments split across the ranks (default 0: replicated)")
    p.add_argument("--bucket-mb", type=positive_float, default=25.0,
                   help="gradients are summed over the ranks in flat buckets of this many MB (default 25)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minillm", description="BERT from the softmax up: pretrain, fine-tune, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the whole journey on SST-2 + WikiText-2 in about 10 minutes")
    p.add_argument("--out", type=out_dir, default="runs/demo", help="where the models and the report go")
    p.add_argument("--minutes", type=positive_float, default=10.0, help="rough wall-time budget (default 10)")
    p.add_argument("--pretrain-steps", type=positive_int, default=None, help="override the budgeted pretraining steps")
    p.add_argument("--finetune-steps", type=positive_int, default=None, help="override the budgeted fine-tuning steps")
    p.add_argument("--preset", default="tiny", choices=("tiny", "mini", "small"))
    p.add_argument("--data", default=None, help="folder with sst2/ and wikitext2/ (default: MINILLM_DATA, cache, download)")
    p.add_argument("--seed", type=random_seed, default=0)
    _add_backend(p)

    p = sub.add_parser("pretrain", help="masked-language-model (or, --objective clm, causal) pretraining from random weights")
    p.add_argument("--objective", default="mlm", choices=("mlm", "clm"),
                   help="mlm: BERT, predict masked tokens (default); clm: GPT-2, predict every next token")
    p.add_argument("--preset", default=None, choices=("tiny", "mini", "small", "gpt-tiny", "gpt-mini", "gpt-small"),
                   help="model shape: tiny|mini|small for mlm (default mini), gpt-tiny|gpt-mini|gpt-small for clm "
                        "(default gpt-mini)")
    p.add_argument("--corpus", nargs="+", required=True, help="plain-text files (one paragraph per line) or GLUE TSVs")
    p.add_argument("--out", type=out_dir, required=True)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=positive_int, default=None, help="optimizer steps (default 1000)")
    length.add_argument("--minutes", type=positive_float, default=None,
                        help="a wall-time budget instead: the steps that fit are measured before the first one, "
                             "and the schedule is laid over them")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seq-len", type=sequence_length, default=128)
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--lr", type=positive_float, default=5e-4)
    p.add_argument("--warmup", type=warmup_amount, default=0.06,
                   help="warm-up: a fraction of the steps (< 1) or a number of steps (>= 1); then linear decay to 0")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.01)
    p.add_argument("--dropout", type=dropout_rate, default=0.0, help="hidden-state dropout while pretraining")
    p.add_argument("--mask-rate", type=mask_rate, default=0.15, help="share of the tokens to predict")
    p.add_argument("--vocab", default=None, help="vocab.txt (or a folder with one); default: train WordPiece on the "
                   "corpus. clm: a folder with vocab.json + merges.txt; default: train byte-level BPE on the corpus")
    p.add_argument("--vocab-size", type=positive_int, default=8000)
    p.add_argument("--grad-accum", type=positive_int, default=1)
    p.add_argument("--eval-every", type=nonnegative_int, default=0, help="0: ten evaluations per run")
    p.add_argument("--checkpoint-every", type=nonnegative_int, default=200, help="0: only at the end")
    p.add_argument("--whole-word", action="store_true", help="whole-word masking")
    p.add_argument("--alibi", action="store_true",
                   help="add ALiBi's -m_h |i - j| to the attention scores (leaves the word-order plateau early; "
                        "transformers cannot load the result)")
    p.add_argument("--dense-head", action="store_true", help="score every position, not only the masked ones")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    _add_backend(p)
    _add_distributed(p)

    p = sub.add_parser("finetune", help="fine-tune a checkpoint for sentence classification")
    p.add_argument("--model", required=True)
    p.add_argument("--train", required=True)
    p.add_argument("--eval", default=None, help="labelled TSV scored once, at the end, on the chosen checkpoint "
                                                "(omitted: only the validation split is scored)")
    p.add_argument("--out", type=out_dir, required=True)
    p.add_argument("--epochs", type=positive_float, default=3.0)
    p.add_argument("--lr", type=positive_float, default=5e-5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--max-length", type=classifier_length, default=128)
    p.add_argument("--max-steps", type=nonnegative_int, default=0, help="cap on optimizer steps (0: epochs decide)")
    p.add_argument("--evals-per-epoch", type=positive_int, default=1)
    p.add_argument("--eval-every", type=nonnegative_int, default=0,
                   help="evaluate every N steps (overrides --evals-per-epoch)")
    p.add_argument("--num-labels", type=label_count, default=2)
    p.add_argument("--validation-fraction", type=open_fraction, default=0.05,
                   help="share of --train held out to choose the checkpoint (at most 1,000 rows); --eval is "
                        "scored once, at the end")
    p.add_argument("--validation", choices=("rows", "sentences"), default="rows",
                   help="rows: a random share of the rows; sentences: whole sentences, each of their phrases "
                        "removed from training (for SST-2, whose rows are phrases of one another)")
    p.add_argument("--warmup", type=warmup_amount, default=0.1,
                   help="warm-up: a fraction of the steps (< 1) or a number of steps (>= 1); then linear decay to 0")
    p.add_argument("--weight-decay", type=nonnegative_float, default=0.01)
    p.add_argument("--dropout", type=dropout_rate, default=0.1,
                   help="hidden-state and classifier dropout (replaces the checkpoint's own)")
    p.add_argument("--extend-positions", action="store_true",
                   help="a --max-length beyond the model's positions grows its position table (learned rows repeated)")
    p.add_argument("--pooling", choices=("cls", "mean"), default=None,
                   help="the sentence vector the classifier reads: BERT's [CLS] token, or the mean over the tokens "
                        "(a checkpoint transformers refuses by its model_type); default: the checkpoint's own, cls")
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--resume", action="store_true")
    _add_backend(p)
    _add_distributed(p)

    p = sub.add_parser("evaluate", help="accuracy, F1 and confusion matrix on a labelled TSV")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--zero-shot", action="store_true",
                   help="no classifier: a BERT MLM fills a cloze prompt's [MASK], a GPT-2 writes the next word")
    p.add_argument("--prompt", default=None,
                   help="a prompt with {sentence}: a cloze with [MASK] for a BERT, text that the label word "
                        "continues for a GPT-2")
    p.add_argument("--no-calibrate", action="store_true",
                   help="zero-shot without dividing by the label words' content-free prior")
    p.add_argument("--label-words", default=None,
                   help="label words per class, classes separated by ';', words by ',' (e.g. 'bad,awful;good,great')")
    _add_backend(p)

    p = sub.add_parser("predict", help="label and probability for each text")
    p.add_argument("--model", required=True)
    p.add_argument("texts", nargs="+")
    _add_backend(p)

    p = sub.add_parser("fill-mask", help="the MLM head's top-k tokens, with probabilities, at each [MASK]")
    p.add_argument("--model", required=True, help="a folder with an MLM head (e.g. the output of pretrain)")
    p.add_argument("text", help='a sentence with one or more [MASK], e.g. "the movie was [MASK] ."')
    p.add_argument("--top-k", type=positive_int, default=5, help="tokens shown per [MASK] (default 5)")
    _add_backend(p)

    p = sub.add_parser("attention", help="attention maps of every layer and head, drawn into an image")
    p.add_argument("--model", required=True, help="a BERT folder: pretrained, fine-tuned or bare encoder")
    p.add_argument("--text", required=True)
    p.add_argument("--out", required=True, help="the image to write, e.g. attn.png (its folder must exist)")
    p.add_argument("--layer", type=nonnegative_int, default=None, help="draw only this layer (from 0)")
    p.add_argument("--head", type=nonnegative_int, default=None, help="draw only this head (from 0)")
    _add_backend(p)

    p = sub.add_parser("generate", help="continue a prompt with a GPT-2 model, the text streamed as it is produced")
    p.add_argument("--model", required=True, help="a GPT-2 folder (save_pretrained) with vocab.json + merges.txt")
    p.add_argument("--prompt", required=True, help="the text to continue ('' starts from <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=positive_int, default=50)
    p.add_argument("--temperature", type=nonnegative_float, default=None,
                   help="sample with this temperature (0: greedy); without --temperature, --top-k or --top-p: greedy")
    p.add_argument("--top-k", type=nonnegative_int, default=None, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=probability, default=None, help="nucleus sampling: the most likely tokens "
                   "holding probability p (1: all)")
    p.add_argument("--seed", type=random_seed, default=None, help="makes sampling reproducible")
    _add_backend(p)

    p = sub.add_parser("bench", help="kernel benchmarks against PyTorch (see benchmarks/)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _setup_backend(args) -> str:
    """Set the kernel backend; return the device ("cpu" or "cuda") that run() hands to every path explicitly.

    --device cuda means the cupy kernels on GPU arrays; the CPU backends cannot run there, nor cupy on the CPU.
    """
    from . import set_backend

    device, backend = getattr(args, "device", "cpu"), getattr(args, "backend", None)
    if device == "cuda":
        if backend not in (None, "cupy"):
            raise ValueError(f"--device cuda runs the cupy kernels, --backend {backend} runs on the CPU; drop one")
        set_backend("cupy")  # fails here, with the install hint, when CuPy is missing
    elif backend == "cupy":
        raise ValueError("--backend cupy needs --device cuda (the cupy kernels run on GPU arrays)")
    elif backend:
        set_backend(backend)
    return device


def run(args) -> int:
    device = _setup_backend(args)
    if args.command == "pretrain":
        from .train.pretrain import PretrainArgs, pretrain
        from .train.pretrain_clm import DEFAULT_PRESET

        result = pretrain(PretrainArgs(
            corpus=args.corpus, out=args.out, preset=args.preset or DEFAULT_PRESET[args.objective],
            objective=args.objective, steps=args.steps, minutes=args.minutes,
            batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed, lr=args.lr, warmup=args.warmup,
            weight_decay=args.weight_decay, dropout=args.dropout, mask_rate=args.mask_rate, vocab=args.vocab,
            vocab_size=args.vocab_size,
            grad_accum=args.grad_accum, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
            whole_word=args.whole_word, alibi=args.alibi, resume=args.resume, sparse_head=not args.dense_head,
            device=device))
        print(json.dumps(result))
    elif args.command == "finetune":
        from .train.finetune import FinetuneArgs, finetune

        result = finetune(FinetuneArgs(
            model=args.model, train=args.train, eval=args.eval, out=args.out, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, num_labels=args.num_labels,
            max_steps=args.max_steps, evals_per_epoch=args.evals_per_epoch, eval_every=args.eval_every,
            resume=args.resume, validation_fraction=args.validation_fraction, validation=args.validation,
            extend_positions=args.extend_positions, warmup=args.warmup,
            weight_decay=args.weight_decay, dropout=args.dropout, pooling=args.pooling, device=device))
        print(json.dumps({k: v for k, v in result.items() if k != "confusion"}))
    elif args.command == "evaluate":
        from .train.finetune import evaluate_path
        from .train.zero_shot_clm import evaluate_zero_shot_any

        if args.zero_shot:  # the checkpoint's model_type picks the cloze (BERT) or next-word (GPT-2) classifier
            words = None if not args.label_words else tuple(
                tuple(w.strip() for w in group.split(",") if w.strip()) for group in args.label_words.split(";"))
            result = evaluate_zero_shot_any(args.model, args.data, args.prompt, words,
                                            calibrate=not args.no_calibrate, device=device)
        else:
            result = evaluate_path(args.model, args.data, device=device)
        print(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['f1']:.4f}  n {result['n']}")
        print("confusion (rows: true label, columns: predicted):")
        for i, row in enumerate(result["confusion"]):
            print(f"  {i}: " + " ".join(f"{c:6d}" for c in row))
        print(json.dumps({"accuracy": result["accuracy"], "n": result["n"]}))
    elif args.command == "predict":
        from .train.finetune import predict

        for r in predict(args.model, args.texts, device=device):
            print(f"{r['label']}\t{r['probability']:.3f}\t{r['text']}")
    elif args.command == "fill-mask":
        from .look import fill_mask, format_fill_mask, load_masked_lm

        model, tok = load_masked_lm(args.model, device=device)
        print(format_fill_mask(args.text, fill_mask(model, tok, args.text, args.top_k)))
    elif args.command == "attention":
        from .look import draw_attention

        draw_attention(args.model, args.text, args.out, args.layer, args.head, device=device)
        print(f"wrote {args.out}")
    elif args.command == "demo":
        from .train.demo import DemoArgs, demo

        demo(DemoArgs(out=args.out, minutes=args.minutes, pretrain_steps=args.pretrain_steps,
                      finetune_steps=args.finetune_steps, preset=args.preset, data=args.data, seed=args.seed,
                      device=device))
    elif args.command == "generate":
        from .models.generation import stream_generate

        def write(text):
            sys.stdout.write(text)
            sys.stdout.flush()

        stream_generate(args.model, args.prompt, write, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                        device=device)
        write("\n")
    elif args.command == "bench":
        import runpy
        from pathlib import Path

        script = Path(__file__).resolve().parents[1] / "benchmarks" / "kernels.py"
        if not script.is_file():
            raise FileNotFoundError(f"{script}: the benchmarks live in the source checkout, not in an installed wheel")
        sys.argv = [str(script)] + args.rest
        runpy.run_path(str(script), run_name="__main__")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the rest is benchmarks/kernels.py's (REMAINDER would refuse a leading --flag)
        args = argparse.Namespace(command="bench", rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    from .train.distributed import finish, start_from_cli

    try:
        if hasattr(args, "ranks"):  # pretrain, finetune: relaunched under mpiexec, or this rank set up
            status = start_from_cli(args, argv)
            if status is not None:
                return status
        return run(args)
    except (ValueError, OSError, KeyError, IndexError, RuntimeError, FloatingPointError) as e:
        if os.environ.get("MINILLM_DEBUG"):
            raise
        print(f"minillm: error: {e}", file=sys.stderr)
        return finish(2)  # under MPI: every rank stops, none waits for this one
    except KeyboardInterrupt:
        print("minillm: interrupted (the last checkpoint is intact; rerun with --resume)", file=sys.stderr)
        return finish(130)


if __name__ == "__main__":
    sys.exit(main())
