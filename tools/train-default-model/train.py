"""Trains skein's bundled default model and writes models/skein-default/skein-default.gguf.

Run from the repository root with Debian's PyTorch (see README.md):
    /usr/bin/python3 tools/train-default-model/train.py
"""
import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bpe  # noqa: E402
import corpus  # noqa: E402
import gguf_export  # noqa: E402
from model import Llama, ModelConfig  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 2048
TOKENIZATION_SAMPLES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Don't count your chickens before they're hatched -- 1,234 of them in 2024.",
    "  Leading spaces,\ttabs and\nnew lines\n\nstay put.  ",
    "<|im_start|>user\nTell me a fortune.<|im_end|>\n<|im_start|>assistant\n",
    "Caf\u00e9 na\u00efve \u65e5\u672c \U0001F600",
]
REFERENCE_PROMPTS = ["Tell me a fortune.", "Give me a quote about computers.", "Hello!"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    parser.add_argument("--out", default=os.path.join(root, "models", "skein-default", "skein-default.gguf"))
    parser.add_argument("--reference", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json"))
    parser.add_argument("--steps", type=int, default=640)
    parser.add_argument("--max-train-seconds", type=float, default=1200,
                        help="on a slow or busy machine the schedule follows the clock instead and stops at this budget")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256, help="training sequence length in tokens")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def split_fortunes(fortunes, rng):
    shuffled = list(fortunes)
    rng.shuffle(shuffled)
    held_out = max(1, len(shuffled) // 40)
    return shuffled[held_out:], shuffled[:held_out]


def train_tokenizer(fortunes, rng):
    # The tokenizer sees text the way llama.cpp will hand it over: the chat template's fragments
    # between special tokens, one single-turn conversation per fortune.
    splitter = bpe.ByteLevelBpe([], SPECIAL_TOKENS)
    texts = []
    for fortune in fortunes:
        rendered = corpus.render_chatml(corpus.conversation([fortune], rng, 1))
        texts += [f for f in splitter._special_split.split(rendered) if f and f not in SPECIAL_TOKENS]
    return bpe.train_bpe(texts, VOCAB_SIZE - 256 - len(SPECIAL_TOKENS), SPECIAL_TOKENS)


def make_rows(fortunes, tokenizer, rng, count, length):
    """Each row is one conversation from its start (as at inference), cut at `length` tokens."""
    rows = []
    for _ in range(count):
        ids = []
        while len(ids) < length:
            ids = tokenizer.encode(corpus.render_chatml(corpus.conversation(fortunes, rng, 1 + len(ids) // 40 + 3)))
        rows.append(ids[:length])
    return torch.tensor(rows, dtype=torch.long)


def loss_on(model, rows):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(rows[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))


@torch.no_grad()
def validation_loss(model, rows):
    model.eval()
    losses = [loss_on(model, rows[i:i + 8]).item() for i in range(0, len(rows), 8)]
    model.train()
    return sum(losses) / len(losses)


def learning_rate(progress, peak):
    """Linear warm-up over the first 5%, then cosine decay to 10% of the peak."""
    if progress < 0.05:
        return peak * max(progress, 0.002) / 0.05
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - 0.05) / 0.95))))


@torch.no_grad()
def greedy(model, prompt_ids, max_tokens, stop_id):
    ids = list(prompt_ids)
    out = []
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids[-model.config.context_length:]]))[0, -1]
        token = int(torch.argmax(logits))
        out.append(token)
        if token == stop_id:
            break
        ids.append(token)
    return out


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    started = time.time()

    fortunes = corpus.load_fortunes()
    train_fortunes, valid_fortunes = split_fortunes(fortunes, rng)
    print(f"fortunes: {len(fortunes)} entries, {sum(len(f.text) for f in fortunes)} characters", flush=True)

    tokenizer = train_tokenizer(train_fortunes, rng)
    tokenizer_seconds = time.time() - started
    assistant_tokens = sum(len(tokenizer.encode(f.text)) for f in fortunes)
    print(f"tokenizer: {len(tokenizer.tokens)} tokens in {tokenizer_seconds:.0f} s; fortunes are {assistant_tokens} tokens", flush=True)
    specials = tokenizer.special_ids

    config = ModelConfig(vocab_size=len(tokenizer.tokens), context_length=512, n_embd=192, n_layer=4,
                         n_head=3, n_head_kv=1, n_ff=512)
    model = Llama(config)
    print(f"model: {config} with {model.parameter_count()} parameters", flush=True)

    train_rows = make_rows(train_fortunes, tokenizer, rng, args.steps * args.batch, args.seq + 1)
    valid_rows = make_rows(valid_fortunes, tokenizer, rng, 32, args.seq + 1)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95))
    train_started = time.time()
    loss_log = []
    recent = []
    steps_done = 0
    for step in range(args.steps):
        # Progress is the larger of steps and wall-clock time used, so a busy machine still ends
        # with a fully decayed learning rate within the time budget (the run is then shorter).
        progress = max(step / args.steps, (time.time() - train_started) / args.max_train_seconds)
        if progress >= 1:
            break
        steps_done = step + 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(progress, args.lr)
        loss = loss_on(model, train_rows[step * args.batch:(step + 1) * args.batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        recent.append(loss.item())
        if (step + 1) % 20 == 0:
            elapsed = time.time() - train_started
            mean = sum(recent) / len(recent)
            recent = []
            loss_log.append({"step": step + 1, "train_loss": round(mean, 4)})
            print(f"step {step + 1}/{args.steps} loss {mean:.3f} {elapsed:.0f} s, eta {elapsed / (step + 1) * (args.steps - step - 1):.0f} s", flush=True)
    train_seconds = time.time() - train_started
    valid_loss = validation_loss(model, valid_rows)
    print(f"validation loss {valid_loss:.3f} (perplexity {math.exp(valid_loss):.1f})", flush=True)

    # Export with F16 weights, then build the reference outputs from the very same rounded weights.
    model.load_state_dict({k: v.half().float() if v.dim() >= 2 else v for k, v in model.state_dict().items()})
    model.eval()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    metadata = gguf_export.llama_metadata(config, tokenizer, "skein-default", bos_id=specials["<|endoftext|>"],
                                          eos_id=specials["<|im_end|>"], pad_id=specials["<|endoftext|>"])
    size_bytes = gguf_export.write_gguf(args.out, metadata, gguf_export.llama_tensors(model.state_dict(), config))

    generations = []
    for prompt in REFERENCE_PROMPTS:
        prompt_ids = tokenizer.encode(corpus.render_chatml([("user", prompt)], add_generation_prompt=True))
        ids = greedy(model, prompt_ids, 48, specials["<|im_end|>"])
        generations.append({"prompt": prompt, "prompt_ids": prompt_ids, "greedy_ids": ids, "text": tokenizer.decode(ids)})
        print(f"> {prompt}\n{tokenizer.decode(ids)!r}", flush=True)
    report = {
        "parameters": model.parameter_count(),
        "config": config.__dict__,
        "vocab_size": len(tokenizer.tokens),
        "fortunes": len(fortunes),
        "fortune_characters": sum(len(f.text) for f in fortunes),
        "fortune_tokens": assistant_tokens,
        "training_tokens": steps_done * args.batch * args.seq,
        "steps": steps_done, "planned_steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr, "seed": args.seed,
        "final_train_loss": loss_log[-1]["train_loss"] if loss_log else None,
        "validation_loss": round(valid_loss, 4),
        "tokenizer_seconds": round(tokenizer_seconds),
        "train_seconds": round(train_seconds),
        "total_seconds": round(time.time() - started),
        "gguf_bytes": size_bytes,
        "loss_log": loss_log,
        "tokenization": [{"text": t, "ids": tokenizer.encode(t)} for t in TOKENIZATION_SAMPLES],
        "generations": generations,
    }
    with open(args.reference, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {args.out} ({size_bytes} bytes) in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
